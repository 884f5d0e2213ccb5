"""Runs after submission: follow, supervise, reap lost workers, cancel, kill, download, read results.

A run's worker may die without a word (``kill -9``, out of memory). Two things catch that:

- the *supervisor*: whoever follows a run (``follow_run``: the CLI waiting on ``train``, the Python API's
  ``wait_for_completion``) checks the worker on every poll and marks the run ``Failed`` with
  ``process lost`` as soon as the worker is gone without having ended the run;
- ``reap_stale_runs``, which any command can run: runs whose heartbeat is older than ``max_age`` seconds
  (after asking their backend, which may still run them: a Ray job outlives its follower), and runs whose
  recorded worker no longer exists, are marked lost.

Artifacts are recorded only after they were written completely (see ``compute.outputs``), so a lost run
never has a half-written artifact on record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import hints
from ..artifacts.local import ArtifactStore, LocalArtifactStore
from ..compute.backend import WorkerHandle, WorkerStatus, get_backend
from ..compute.outputs import RESULT_NAME, materialize_outputs, result_from_dict
from ..compute.spec import ComputeSpec
from ..compute.worker import DEBUG_LOG_NAME
from ..entities import LogLine, Metric, Run, RunStatus
from ..errors import (
    ArtifactNotFoundError,
    InvalidParameterError,
    InvalidStateError,
    ModelBuilderError,
    TrainingError,
)
from ..store import lifecycle
from ..store.base import RUN_ORDER_FIELDS, WORKER_STATUSES, MetadataStore
from ..training.config import TrainingResult
from .training_run import job_for_run
from .workspaces import WorkspaceSession

logger = logging.getLogger(__name__)

#: Seconds without a heartbeat after which a worker counts as lost.
STALE_AFTER_S = 30.0
POLL_INTERVAL_S = 0.5
LOST = lifecycle.LOST
#: Fields that ``list_runs_page`` sorts by (each optionally followed by asc or desc), plus ``metric.<key>``.
SORT_FIELDS = RUN_ORDER_FIELDS


def _age_seconds(run: Run) -> float:
    last = run.heartbeat_at or run.started_at or run.created_at
    if last is None:
        return 0.0
    return max(0.0, time.time() - last.timestamp())


def find_worker(session: WorkspaceSession, run: Run) -> WorkerHandle | None:
    """The worker its compute's backend started for ``run`` (asked from any process), or None."""
    try:
        compute = session.store.find_compute(run.compute or "local")
        if compute is None:
            return None  # its compute was deleted: no backend can tell
        spec = ComputeSpec.from_compute(compute)
        return get_backend(spec.backend).find(job_for_run(session, run), spec)
    except ModelBuilderError as exc:
        logger.warning("The worker of run %s cannot be checked: %s", run.id, exc)
        return None


def _reconcile_artifacts(store: MetadataStore, artifacts: ArtifactStore, run_id: str) -> None:
    """Make the records of a lost run match its files.

    Files are replaced atomically, so each one is complete; but a worker killed between replacing a file
    and recording its new sha256 leaves a record of the previous version. Re-record what is on disk.
    """
    for name in artifacts.find_mismatches(run_id, store.list_artifacts(run_id)):
        try:
            actual = artifacts.describe(run_id, name)
        except (ArtifactNotFoundError, InvalidParameterError):
            continue
        store.log_artifact(run_id, name, actual.size, actual.sha256)
        logger.info("Re-recorded artifact %s of lost run %s", name, run_id)


def _remove_temp_files(artifacts: LocalArtifactStore, run_id: str) -> None:
    """Remove the temp files a lost run's worker left mid-write (never listed, never recorded; nobody will
    finish them now)."""
    folder = artifacts.run_dir(run_id)
    if not folder.is_dir() or folder.is_symlink():
        return
    for path in folder.rglob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()
                logger.info("Removed %s, left half-written by the lost worker of run %s", path.name, run_id)


def mark_lost(
    store: MetadataStore, run_id: str, detail: str, artifacts: ArtifactStore | None = None
) -> Run | None:
    """End an active run ``Failed`` with ``process lost: <detail>`` (and its active trials); None if it
    ended meanwhile (its worker, or another reaper, got there first). With the artifact store, the run's
    artifact records are reconciled first, and the temp files its worker left mid-write removed after."""
    run = store.get_run(run_id)
    if run.status.is_terminal:
        return None
    if artifacts is not None:
        try:
            _reconcile_artifacts(store, artifacts, run.id)
        except InvalidStateError:
            return None  # it ended while we looked at its files
    ended = lifecycle.mark_lost_if_active(store, run.id, detail)
    if ended is not None and isinstance(artifacts, LocalArtifactStore):
        _remove_temp_files(artifacts, run.id)
    if ended is not None and ended.error is not None:
        # Only the reaper that won writes the error to the log: two reapers, one Error/Hint block.
        store.log_lines(run.id, ended.error.lines())
        logger.warning("Run %s marked Failed: %s", run.id, ended.error.message)
    return ended


def reap_stale_runs(
    store: MetadataStore,
    max_age: float = STALE_AFTER_S,
    *,
    session: WorkspaceSession | None = None,
    artifacts: ArtifactStore | None = None,
) -> list[Run]:
    """Mark ``Failed`` (``process lost``) every run whose worker is gone; return them.

    A worker is gone when its run sent no heartbeat for ``max_age`` seconds and — given the session —
    its backend, asked first, says its worker has ended, cannot find it, or cannot see it (a local worker
    of another host: only its heartbeats tell): a Ray run whose job the
    cluster still runs is not lost because its follower died with the submitting machine (``find``
    starts a new follower, which resumes and heartbeats again). Given the session, a worker that has
    ended without ending the run, and a ``Queued`` run that never got a worker within ``max_age``
    seconds, are lost too. Given the artifact store, the artifact records of each lost run are
    reconciled with its files first.
    """
    reaped: list[Run] = []
    # What each top-level run's backend said, asked once per call: a second ``find`` could start a
    # second Ray follower. A trial (child run) has the worker of its parent.
    asked: dict[str, WorkerStatus | None] = {}
    for run in store.find_stale_runs(max_age):
        detail = f"no heartbeat for {_age_seconds(run):.0f} s"
        if session is not None:
            root = store.get_run(run.parent_run_id) if run.parent_run_id else run
            if root.id not in asked:
                stale_worker = find_worker(session, root)
                asked[root.id] = None if stale_worker is None else stale_worker.status()
            worker_status = asked[root.id]
            if worker_status is not None and worker_status.known:
                if not worker_status.is_final:
                    logger.info(
                        "Run %s has no recent heartbeat but its worker lives: %s", run.id, worker_status
                    )
                    continue
                detail = f"{detail}; {worker_status}"
        ended = mark_lost(store, run.id, detail, artifacts)
        if ended is not None:
            reaped.append(ended)
    if session is None:
        return reaped
    watched = {*WORKER_STATUSES, RunStatus.QUEUED}
    for run in store.list_runs(parent_run_id=None, statuses=watched, limit=None):
        if run.id in asked:
            continue
        worker = find_worker(session, run)
        if worker is None:
            if run.status is RunStatus.QUEUED and _age_seconds(run) > max_age:
                detail = f"no worker started within {max_age:.0f} s"
            else:
                continue
        elif (status := worker.status()).is_final:
            if not (fresh := store.get_run(run.id)).status.is_terminal:
                detail = str(status)
                run = fresh
            else:
                continue
        else:
            continue
        ended = mark_lost(store, run.id, detail, artifacts)
        if ended is not None:
            reaped.append(ended)
    return reaped


def reap_lost_runs(session: WorkspaceSession, max_age: float = STALE_AFTER_S) -> list[Run]:
    """``reap_stale_runs`` for an open workspace (worker records and artifacts included)."""
    return reap_stale_runs(
        session.store, max_age, session=session, artifacts=session.artifacts
    )


def status_label(run: Run) -> str:
    """The status as people read it: ``Failed (process lost)`` when the worker vanished."""
    return f"{run.status.value} ({LOST})" if lifecycle.is_lost(run) else run.status.value


def run_failure(session: WorkspaceSession, run: Run) -> ModelBuilderError:
    """The error a Failed run ended with, as the exception its worker raised (same ModelBuilderError class,
    message and hint; an unexpected error is a TrainingError), for callers to raise."""
    logs = hints.command("run", "logs", hints.short_id(run.id), workspace=session.name)
    if run.error is None:
        return TrainingError(f"Run '{run.id}' failed without a recorded error.", hint=f"See its log: {logs}")
    error = run.error.to_exception()
    if error.hint is None:
        error.hint = f"See its log: {logs}"
    return error


def debug_log(session: WorkspaceSession, run_id: str) -> str | None:
    """The run's debug log (tracebacks of expected errors, written by a local worker), or None."""
    path = session.run_folders(run_id).state_dir / DEBUG_LOG_NAME
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def get_run(session: WorkspaceSession, run_id: str) -> Run:
    """The run with this id (or unique prefix of 6+ characters).

    Raises:
        RunNotFoundError: no run matches.
        InvalidParameterError: the prefix matches several runs.
    """
    return session.store.get_run(run_id)


def list_runs_page(
    session: WorkspaceSession,
    experiment: str,
    *,
    offset: int = 0,
    limit: int = 50,
    order_by: str = "created_at desc",
) -> tuple[list[Run], int]:
    """One page of an experiment's top-level runs (``order_by``: a field of ``RUN_ORDER_FIELDS`` or
    ``metric.<key>``, optionally followed by asc or desc) and how many there are in all.

    Raises:
        ExperimentNotFoundError: the experiment does not exist.
        InvalidParameterError: a bad sort key, offset or limit.
    """
    found = session.store.get_experiment(experiment)
    store = session.store
    page = store.list_runs(found.id, parent_run_id=None, offset=offset, limit=limit, order_by=[order_by])
    return page, store.count_runs(found.id, parent_run_id=None)


def list_trials(session: WorkspaceSession, run_id: str) -> list[Run]:
    """The trials (child runs) of a run, in creation order.

    Raises:
        RunNotFoundError: no such run.
    """
    return session.store.list_child_runs(session.store.get_run(run_id).id)


def metric_histories(session: WorkspaceSession, run_id: str) -> dict[str, list[Metric]]:
    """Every value of every metric of a run, by key, in step order.

    Raises:
        RunNotFoundError: no such run.
    """
    return session.store.get_metric_histories(run_id)


def metric_history(session: WorkspaceSession, run_id: str, key: str) -> list[Metric]:
    """Every value of one metric of a run, in step order (empty for a metric it never logged)."""
    return session.store.get_metric_history(run_id, key)


def log_lines(
    session: WorkspaceSession, run_id: str, offset: int = 0, limit: int | None = 1000
) -> tuple[list[LogLine], int]:
    """Log lines of a run from ``offset`` (negative: from the end), and how many lines it has.

    Raises:
        RunNotFoundError: no such run.
    """
    total = session.store.count_log_lines(run_id)
    return session.store.get_log_lines(run_id, offset=offset, limit=limit), total


def list_runs(
    session: WorkspaceSession,
    experiment: str | None = None,
    *,
    include_children: bool = False,
    statuses: list[RunStatus] | None = None,
    limit: int | None = 100,
) -> list[Run]:
    """Runs newest first: top-level ones (or all), of one experiment or all.

    Raises:
        ExperimentNotFoundError: the experiment does not exist.
    """
    experiment_id = session.store.get_experiment(experiment).id if experiment else None
    return session.store.list_runs(
        experiment_id, parent_run_id=... if include_children else None, statuses=statuses, limit=limit
    )


def cancel_run(session: WorkspaceSession, run_id: str) -> Run:
    """Ask a run to stop: ``CancelRequested`` (the worker stops at its next safe point and keeps the best
    model so far); a run no worker has picked up yet is ``Canceled`` at once.

    Raises:
        RunNotFoundError: no such run.
        InvalidStateError: the run already ended.
    """
    store = session.store
    run = store.get_run(run_id)
    if run.parent_run_id is not None and not run.status.is_terminal:
        parent = hints.short_id(run.parent_run_id)
        raise InvalidStateError(
            f"Run '{run.id}' is a trial of run '{run.parent_run_id}'; trials are not canceled alone.",
            hint=f"Cancel the run itself: {hints.command('run', 'cancel', parent)}",
        )
    before = run.status
    run = lifecycle.request_cancel(store, run.id)
    if run.status is RunStatus.CANCELED:
        if before is not RunStatus.CANCELED:
            store.log_lines(run.id, ["Run Canceled before a worker picked it up."])
        return run
    worker = find_worker(session, run)
    if worker is None or worker.status().is_final:
        # Nobody will act on the request: its worker is gone (or was never recorded). End it here,
        # unless a reaper ended it first (then it stays as the reaper left it).
        try:
            ended = lifecycle.end_canceled(store, run.id)
        except InvalidStateError:
            return store.get_run(run.id)
        lifecycle.end_children(store, run.id, RunStatus.CANCELED)
        store.log_lines(run.id, ["Run Canceled: its worker was no longer running."])
        return ended
    if before is not RunStatus.CANCEL_REQUESTED:
        store.log_lines(run.id, ["Cancel requested."])
    worker.cancel()  # a worker that cannot read the store (Ray) hears it from its backend
    return run


def kill_run(session: WorkspaceSession, run_id: str, worker: WorkerHandle | None = None) -> Run:
    """Kill a run's worker now (the second Ctrl-C) and end the run ``Canceled`` (no final outputs).

    Raises:
        RunNotFoundError: no such run.
    """
    store = session.store
    run = store.get_run(run_id)
    handle = worker or find_worker(session, run)
    if handle is not None:
        handle.kill()
    run = store.get_run(run.id)
    if run.status.is_terminal:
        return run
    store.log_lines(run.id, ["Run Canceled: the worker was killed on request."])
    lifecycle.end_children(store, run.id, RunStatus.CANCELED)
    try:
        return lifecycle.end_canceled(store, run.id)
    except InvalidStateError:
        return store.get_run(run.id)  # it ended otherwise meanwhile


@dataclass
class RunUpdate:
    """What changed in a followed run since the previous update."""

    run: Run
    new_lines: list[LogLine] = field(default_factory=list)
    children: list[Run] = field(default_factory=list)
    status_changed: bool = False


class ClosingErrorFilter:
    """Holds back a failed run's closing ``Error:``/``Hint:`` lines from a live view of its log.

    A run that fails ends its log with its error (``RunError.lines()``); whoever shows the log live and then
    raises the run's error (the CLI's ``train``, ``wait_for_completion``) would show it twice. From a line
    that starts with ``Error: `` on, lines are held; when the run ends ``Failed`` they are dropped (the caller
    raises the error), otherwise, or when a long tail follows (it was not the closing block), released.
    """

    MARKER = "Error: "
    #: More held lines than this: not a closing block (a failed run's block is a few lines long).
    MAX_HELD = 200

    def __init__(self) -> None:
        self.held: list[LogLine] = []

    def apply(self, update: RunUpdate) -> RunUpdate:
        """The update with the lines to show now."""
        shown: list[LogLine] = []
        for line in update.new_lines:
            if self.held or line.text.startswith(self.MARKER):
                self.held.append(line)
            else:
                shown.append(line)
        if len(self.held) > self.MAX_HELD or (
            update.run.status.is_terminal and update.run.status is not RunStatus.FAILED
        ):
            shown, self.held = shown + self.held, []
        elif update.run.status is RunStatus.FAILED:
            self.held = []  # the caller raises the run's error: its text is shown once, there
        return RunUpdate(update.run, shown, update.children, update.status_changed)


class RunFollower:
    """Polls one run and supervises its worker; ``step()`` returns what changed since the last step.

    When the worker ends without having ended the run, the run is marked ``Failed`` (``process lost``)
    at once. That is race-free: a worker commits its final status before it exits, and marking a run
    that has ended meanwhile is refused by the store's transition check.

    Args:
        session: the open workspace.
        run_id: the run to follow.
        worker: its worker, when this process started it (else the recorded one is looked up).
        log_offset: the first log line to report.
    """

    def __init__(
        self,
        session: WorkspaceSession,
        run_id: str,
        worker: WorkerHandle | None = None,
        *,
        log_offset: int = 0,
    ) -> None:
        self.session = session
        self.run = session.store.get_run(run_id)
        self.worker = worker
        self.offset = log_offset
        self._last_status: RunStatus | None = None

    def _new_lines(self) -> list[LogLine]:
        lines = self.session.store.get_log_lines(self.run.id, self.offset, limit=None)
        self.offset += len(lines)
        return lines

    def step(self) -> RunUpdate:
        store = self.session.store
        run = store.get_run(self.run.id)
        lines = self._new_lines()
        if not run.status.is_terminal:
            if self.worker is None and run.status is not RunStatus.NOT_STARTED:
                self.worker = find_worker(self.session, run)
            if self.worker is not None and (ended := self.worker.status()).is_final:
                lost = mark_lost(store, run.id, str(ended), self.session.artifacts)
                run = lost or store.get_run(run.id)
                lines += self._new_lines()
            elif _age_seconds(run) > STALE_AFTER_S and run.status in WORKER_STATUSES:
                detail = f"no heartbeat for {_age_seconds(run):.0f} s"
                run = mark_lost(store, run.id, detail, self.session.artifacts) or run
        self.run = run
        update = RunUpdate(run, lines, store.list_child_runs(run.id), run.status is not self._last_status)
        self._last_status = run.status
        return update

    @property
    def interval(self) -> float:
        """How long to wait before the next step."""
        return POLL_INTERVAL_S


def follow_run(
    session: WorkspaceSession,
    run_id: str,
    worker: WorkerHandle | None = None,
    *,
    log_offset: int = 0,
    timeout: float | None = None,
) -> Iterator[RunUpdate]:
    """Poll a run until it ends (or ``timeout`` seconds pass), yielding updates (see ``RunFollower``)."""
    follower = RunFollower(session, run_id, worker, log_offset=log_offset)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        update = follower.step()
        yield update
        if update.run.status.is_terminal or (deadline is not None and time.monotonic() >= deadline):
            return
        time.sleep(follower.interval)


def load_result(session: WorkspaceSession, run_id: str, output_dir: Path) -> TrainingResult | None:
    """The run's TrainingResult (from ``result.json``) with its files in ``output_dir``; None without one.

    Raises:
        RunNotFoundError: no such run.
    """
    run = session.store.get_run(run_id)
    try:
        data = json.loads(session.artifacts.read(run.id, RESULT_NAME))
    except ArtifactNotFoundError:
        return None
    return result_from_dict(data, output_dir)


def download_outputs(
    session: WorkspaceSession, run_id: str, destination: str | os.PathLike[str], *, raw: bool = False
) -> dict[str, Path]:
    """Copy a run's outputs to ``destination`` as training wrote them (folders unzipped); with ``raw``,
    every artifact file as stored. Returns name -> path.

    Raises:
        RunNotFoundError: no such run.
        InvalidStateError: the run has no artifacts (yet).
        InvalidParameterError: an artifact is of an unknown format version.
    """
    run = session.store.get_run(run_id)
    recorded = session.store.list_artifacts(run.id)
    if not recorded:
        raise InvalidStateError(
            f"Run '{run.id}' ({run.status.value}) has no recorded artifacts.",
            hint="Only runs that ended Completed or Canceled have outputs; see: "
            + hints.command("run", "show", hints.short_id(run.id)),
        )
    target = Path(destination).expanduser()
    if target.exists() and not target.is_dir():
        raise InvalidParameterError(
            f"The download destination {str(target)!r} exists and is not a folder.",
            hint="Give a folder (it is created if missing).",
        )
    if raw:
        names = [artifact.path for artifact in recorded]
        return dict(zip(names, session.artifacts.download(run.id, target, names), strict=True))
    return materialize_outputs(session.artifacts, run.id, target)
