"""Submitting training: a run of an experiment on a compute, executed by the compute's backend.

``submit_training`` registers the experiment on first use, checks the compute can run training now,
creates the run with its params (the training config) and a dataset fingerprint, moves it to
``Queued`` and starts the backend's worker. ``resume_training`` starts a new run (param
``resumed_from``) from a failed or canceled run's config that continues from that run's checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import hints
from ..compute.backend import WorkerHandle, get_backend
from ..compute.job import DEFAULT_TRAINING_TARGET, TrainingJob
from ..compute.spec import ComputeSpec
from ..data.detect import is_hidden
from ..entities import Run, RunError, RunStatus
from ..errors import DatasetError, InvalidStateError
from ..store import lifecycle
from ..training.config import TrainingConfig
from .computes import require_usable_compute
from .experiments import default_experiment_name, get_or_create_experiment
from .preflight import check_submission
from .workspaces import WorkspaceSession

logger = logging.getLogger(__name__)

#: Run params that are not TrainingConfig fields.
RESUMED_FROM = "resumed_from"
CHECKPOINT_OF = "checkpoint_of"
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainingConfig)}


@dataclass
class Submission:
    """A submitted run and the handle of its worker (to supervise it from this process)."""

    run: Run
    worker: WorkerHandle


def dataset_fingerprint(data: str | os.PathLike[str]) -> str:
    """A cheap fingerprint of the training data as it is on disk: sha256 over the sorted relative paths,
    sizes and modification times of its files (hidden ones left out), or over a table file's bytes.

    The trainer's scan computes the content fingerprint later; this one is available before any scan.

    Raises:
        DatasetError: ``data`` does not exist.
    """
    root = Path(data).expanduser()
    digest = hashlib.sha256(b"modelbuilder-listing-v1\n")
    if root.is_file():
        digest.update(root.read_bytes())
        return digest.hexdigest()
    if not root.is_dir():
        raise DatasetError(
            f"The training data {str(root)!r} does not exist.",
            hint="Give a folder with one sub-folder per label, or a CSV/TSV file with ImagePath,Label "
            "columns.",
        )
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in files:
            if is_hidden(name):
                continue
            path = Path(folder) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append(f"{path.relative_to(root).as_posix()}\x00{stat.st_size}\x00{stat.st_mtime_ns}")
    for entry in sorted(entries):
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _absolute(config: TrainingConfig) -> TrainingConfig:
    """The config with its paths made absolute (the worker may run elsewhere)."""

    def resolve(value: str | None) -> str | None:
        return None if value is None else str(Path(value).expanduser().resolve())

    return dataclasses.replace(
        config,
        data=resolve(config.data) or config.data,
        validation_data=resolve(config.validation_data),
        weights=resolve(config.weights),
    )


def submit_training(
    session: WorkspaceSession,
    config: TrainingConfig,
    *,
    experiment: str | None = None,
    compute: str = "local",
    extra_params: dict[str, Any] | None = None,
    checkpoint_of: str | None = None,
    target: str | None = None,
) -> Submission:
    """Create a run of ``experiment`` (default: named after the data folder) on ``compute`` and start it.

    Args:
        session: the open workspace.
        config: what to train.
        experiment: the experiment name (registered on first use).
        compute: the compute's name.
        extra_params: more run params (e.g. ``resumed_from``).
        checkpoint_of: the run whose checkpoint folder the trainer uses (default: the new run's own).
        target: the trainer as ``module:function`` (default: ``DEFAULT_TRAINING_TARGET``).

    Raises:
        DatasetError: the data (or validation data) does not exist.
        InvalidNameError: the experiment name breaks its rule.
        ComputeNotFoundError / ComputeError: the compute does not exist or cannot run training now.
        ComputeError: the worker could not be started (the run is marked Failed).
    """
    config = _absolute(config)
    found = require_usable_compute(session, compute)
    experiment = experiment or default_experiment_name(config.data)
    # Bad input is refused here, before a run row exists (no Failed run is left behind for a typo).
    checked = check_submission(config, experiment=experiment, compute=found.name, backend=found.backend)
    fingerprint = dataset_fingerprint(config.data) if checked.data_visible else None
    spec = ComputeSpec.from_compute(found)
    backend = get_backend(spec.backend)
    exp = get_or_create_experiment(session, experiment)
    params = {**config.to_dict(), **(extra_params or {})}
    if checkpoint_of is not None:
        params[CHECKPOINT_OF] = checkpoint_of
    store = session.store
    run = store.create_run(exp.id, compute=found.name, params=params, dataset_fingerprint=fingerprint)
    run = lifecycle.queue(store, run.id)
    job = job_for_run(session, run, config=config, target=target)
    try:
        worker = backend.start(job, spec)
    except Exception as exc:
        error = RunError.from_exception(exc)
        message = f"the worker could not be started: {error.message}"
        lifecycle.fail(store, run.id, RunError(error.type, message, error.hint))
        raise
    logger.info("Submitted run %s of experiment %s on %s", run.id, exp.name, found.name)
    return Submission(store.get_run(run.id), worker)


def job_for_run(
    session: WorkspaceSession,
    run: Run,
    *,
    config: TrainingConfig | None = None,
    target: str | None = None,
) -> TrainingJob:
    """The job of a run, built from the run itself (its params and compute) and the workspace: what a
    backend is asked to start, or to find the worker of, from any process and without local files."""
    return TrainingJob(
        run_id=run.id,
        workspace=session.name,
        store_url=session.workspace.store_url,
        artifact_root=str(session.artifacts.root),
        # A run's params hold its config; taken as they are, since finding a worker must not depend on
        # them being a valid config today.
        config=config.to_dict() if config else {k: v for k, v in run.params.items() if k in _CONFIG_FIELDS},
        target=target or DEFAULT_TRAINING_TARGET,
        compute=run.compute or "local",
        checkpoint_key=str(run.params.get(CHECKPOINT_OF) or run.id),
    )


def config_of_run(run: Run) -> TrainingConfig:
    """The TrainingConfig a run was started with (from its params)."""
    return TrainingConfig.from_dict({k: v for k, v in run.params.items() if k in _CONFIG_FIELDS})


def resume_training(
    session: WorkspaceSession,
    run_id: str,
    *,
    time_budget: float | None = None,
    compute: str | None = None,
    target: str | None = None,
) -> Submission:
    """Start a new run that continues a ``Failed`` or ``Canceled`` run from its last checkpoint.

    The new run has the old run's config (``time_budget`` may replace the budget), experiment and
    compute, the param ``resumed_from`` and the old run's checkpoint folder.

    Raises:
        RunNotFoundError: no such run.
        InvalidStateError: the run is active or Completed, or is a trial (child) run.
        plus everything ``submit_training`` raises.
    """
    old = session.store.get_run(run_id)
    if old.parent_run_id is not None:
        raise InvalidStateError(
            f"Run '{old.id}' is a trial of run '{old.parent_run_id}'; trials cannot be resumed alone.",
            hint="Resume the parent run: " + hints.command("train", resume=hints.short_id(old.parent_run_id)),
        )
    if old.status not in (RunStatus.FAILED, RunStatus.CANCELED):
        short = hints.short_id(old.id)
        raise InvalidStateError(
            f"Run '{old.id}' is {old.status.value}; only Failed or Canceled runs can be resumed.",
            hint="A Completed run has its outputs already: "
            + hints.command("run", "download", short, output="DIR")
            if old.status is RunStatus.COMPLETED
            else f"Wait for it to end, or cancel it: {hints.command('run', 'cancel', short)}",
        )
    config = config_of_run(old)
    if time_budget is not None:
        config = dataclasses.replace(config, time_budget=time_budget)
    owner = str(old.params.get(CHECKPOINT_OF) or old.id)
    return submit_training(
        session,
        config,
        experiment=old.experiment,
        compute=compute or old.compute or "local",
        extra_params={RESUMED_FROM: old.id},
        checkpoint_of=owner,
        target=target,
    )
