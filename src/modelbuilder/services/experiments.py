"""Experiments: get-or-create by name (the first run registers the name), list, show."""

from __future__ import annotations

import os
from pathlib import Path

from ..entities import Experiment, ExperimentSummary, Run
from ..names import experiment_name_from
from .workspaces import WorkspaceSession


def default_experiment_name(data: str | os.PathLike[str]) -> str:
    """The experiment name used when none is given: the data folder's (or table file's) name."""
    path = Path(data).expanduser().resolve()
    return experiment_name_from(path.name if path.is_dir() else path.stem)


def get_or_create_experiment(session: WorkspaceSession, name: str) -> Experiment:
    """The experiment with this name, registered on first use.

    Raises:
        InvalidNameError: the name breaks the experiment name rule (3-36 characters: letters, digits,
            '_' and '-', starting with a letter or digit).
    """
    return session.store.get_or_create_experiment(name)


def list_experiments(session: WorkspaceSession) -> list[ExperimentSummary]:
    """Every experiment with its number of runs and its latest run."""
    return session.store.list_experiments()


def get_experiment(session: WorkspaceSession, name: str) -> tuple[Experiment, list[Run]]:
    """An experiment and its top-level runs, newest first.

    Raises:
        ExperimentNotFoundError: no experiment has this name.
    """
    experiment = session.store.get_experiment(name)
    return experiment, session.store.list_runs(experiment.id, parent_run_id=None, limit=None)


def get_experiment_summary(session: WorkspaceSession, name: str) -> ExperimentSummary:
    """An experiment with its number of runs and its latest run (what ``list_experiments`` gives for it).

    Raises:
        ExperimentNotFoundError: no experiment has this name.
    """
    found = session.store.get_experiment(name)
    return next(s for s in session.store.list_experiments() if s.experiment.id == found.id)
