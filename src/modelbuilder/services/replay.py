"""Replaying a run: the same config and data, and exactly the plan it executed (``plan.json``).

The new run's trials are bounded by the recorded steps and schedule instead of the time budget, so it
reaches the recorded validation accuracy (within float noise) on any machine speed.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .. import hints
from ..entities import RunStatus
from ..errors import ArtifactNotFoundError, InvalidStateError
from ..training.plan import check_plan_dict
from .training_run import Submission, config_of_run, submit_training
from .workspaces import WorkspaceSession

#: Run param naming the run a replay repeats.
REPLAY_OF = "replay_of"
PLAN_ARTIFACT = "plan.json"


def recorded_plan(session: WorkspaceSession, run_id: str) -> dict[str, Any]:
    """The plan a run executed, as recorded in its ``plan.json`` artifact.

    Raises:
        RunNotFoundError: no such run.
        InvalidStateError: a trial (child) run, or a run without a recorded plan.
    """
    run = session.store.get_run(run_id)
    if run.parent_run_id is not None:
        raise InvalidStateError(
            f"Run '{run.id}' is a trial of run '{run.parent_run_id}'; only whole runs can be replayed.",
            hint="Replay the parent run: " + hints.command("train", replay=hints.short_id(run.parent_run_id)),
        )
    try:
        data = json.loads(session.artifacts.read(run.id, PLAN_ARTIFACT))
    except (ArtifactNotFoundError, ValueError) as exc:
        raise InvalidStateError(
            f"Run '{run.id}' ({run.status.value}) has no readable recorded plan ({PLAN_ARTIFACT}).",
            hint="Only runs trained by this version and ended Completed or Canceled can be replayed; "
            "see its artifacts: " + hints.command("run", "show", hints.short_id(run.id)),
        ) from exc
    check_plan_dict(data)
    return dict(data)


def find_recorded_plan(session: WorkspaceSession, run_id: str) -> dict[str, Any] | None:
    """The run's recorded plan, or None when it has none (yet, or at all)."""
    try:
        data = json.loads(session.artifacts.read(run_id, PLAN_ARTIFACT))
    except (ArtifactNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def replay_training(session: WorkspaceSession, run_id: str, *, compute: str | None = None,
                    target: str | None = None) -> Submission:
    """Start a new run that repeats ``run_id``'s executed plan on the same data with the same config.

    The new run has the param ``replay_of`` and the old run's experiment and compute (unless
    ``compute`` is given).

    Raises:
        RunNotFoundError: no such run.
        InvalidStateError: the run has not ended Completed or Canceled, is a trial, or has no plan.
        plus everything ``submit_training`` raises.
    """
    old = session.store.get_run(run_id)
    if old.status not in (RunStatus.COMPLETED, RunStatus.CANCELED):
        raise InvalidStateError(
            f"Run '{old.id}' is {old.status.value}; only Completed or Canceled runs can be replayed.",
            hint="Wait for it to end: " + hints.command("run", "show", hints.short_id(old.id)),
        )
    plan = recorded_plan(session, old.id)
    config = dataclasses.replace(config_of_run(old), replay_plan=plan)
    return submit_training(session, config, experiment=old.experiment,
                           compute=compute or old.compute or "local", extra_params={REPLAY_OF: old.id},
                           target=target)
