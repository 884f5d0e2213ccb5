"""The follower: the submitting machine's side of a Ray run. It applies the job's events to the store.

The cluster never sees the workspace store. For each Ray run, a small local process
(``python -m modelbuilder.compute.ray.follow FOLLOW.json``, in its own session so it outlives the CLI that
started it) reads the job's log (``compute.events`` lines), applies it with the one shared
``compute.ingest.EventIngester`` (metrics, logs, trials, phases, statuses through ``store.lifecycle``),
keeps the run alive with a ``StoreReporter``'s heartbeats (which also bring a cancel request), reconciles
the run with the job's state, and at the end fetches the outputs through the dashboard (``transfer.py``:
no shared filesystem), verifies each file's size and sha256 and each output's digest against the job's
``result`` event, and records them exactly as the local worker does (``Worker.finish``): the run is
``Completed`` (or ``Canceled`` with the best model so far) only then. A missing or differing output fails
the run before anything of it is recorded.

Exactly once: the ingester's position (last applied ``seq``, plain-line mark, text offset) is saved
(``ray-cursor.json``) after each applied batch, and one follower at a time holds the run's lock. A
follower killed between a batch's store write and the cursor write resumes from the older position, but
an ingester that resumes skips every event whose content the store holds already (metric rows and log
lines keep the event's time), so the batch is not written twice.

Job state -> run: PENDING -> Queued (and, after ``PENDING_CHECK_S``, the size is checked against the live
nodes: a job that can never be scheduled fails with the reason), RUNNING -> Preparing, then Running from
the job's ``started`` event; SUCCEEDED with a result event -> Completed; FAILED -> Failed with the job's
error; STOPPED -> Canceled; a job the cluster no longer knows -> Failed with that reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from ... import hints
from ...artifacts import open_artifact_store
from ...entities import RunError, RunStatus
from ...errors import InvalidStateError
from ...fileio import atomic_write_text
from ...store import lifecycle, open_store
from ...store.base import MetadataStore
from ..events import Result, digest
from ..ingest import EventIngester
from ..job import RunFolders, TrainingJob, WorkerRecord
from ..outputs import result_from_dict
from ..sizes import get_size
from ..store_reporter import StoreReporter
from ..worker import Worker
from .cluster import ClusterUnreachableError, RayCluster
from .jobs import JobState, get_job, job_logs, stop, submission_id
from .resources import cluster_fit_reason
from .transfer import OutputTransferError, Transfer, fetch_outputs, remove_published

logger = logging.getLogger(__name__)

POLL_S = float(os.environ.get("MODELBUILDER_RAY_POLL_S", "1.0"))
LOG_BYTES_PER_EXTRA_POLL_S = 200_000
#: A job still PENDING after this long has its size checked against the live nodes.
PENDING_CHECK_S = float(os.environ.get("MODELBUILDER_RAY_PENDING_S", "30"))
#: How long the cluster may stay unreachable before the run is given up as lost.
UNREACHABLE_GIVE_UP_S = 300.0
FOLLOW_FILE = "ray-follow.json"
CURSOR_FILE = "ray-cursor.json"
LOCK_FILE = "ray-follow.lock"
FOLLOWER_RECORD = "ray-follower.json"
#: Written when a follower ended its run: nobody needs to start another one.
DONE_FILE = "ray-follow.done"
#: Where the follower puts the fetched outputs until they are recorded (in the run's state folder).
FETCHED_DIR = "ray-outputs"


def mark_done(state_dir: Path) -> None:
    atomic_write_text(state_dir / DONE_FILE, "done\n")


def is_done(state_dir: Path) -> bool:
    return (state_dir / DONE_FILE).exists()


@dataclass(frozen=True)
class FollowSpec:
    """What a follower needs: the job (store, artifacts, run), and how to reach the cluster."""

    job: dict[str, Any]
    address: str
    size: str
    token_ref: str | None = None

    def save(self, path: Path) -> Path:
        return atomic_write_text(path, json.dumps(asdict(self), sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> FollowSpec:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


class JobError(Exception):
    """The job's own error, as its ``error`` event or Ray's message told it (becomes the run's error)."""

    def __init__(self, error: RunError) -> None:
        super().__init__(error.message)
        self.error = error


class Follower:
    """Applies one Ray job's events to its run, and ends the run when the job ends."""

    def __init__(self, spec: FollowSpec, store: MetadataStore, worker: Worker) -> None:
        self.spec = spec
        self.job = TrainingJob.from_dict(spec.job)
        self.run_id = self.job.run_id
        self.store = store
        self.worker = worker
        self.folders = RunFolders.of_job(self.job)
        self.cluster = RayCluster(spec.address, spec.token_ref)
        self.client: Any = None
        seq, plain, offset, position = self._load_cursor()
        self.ingester = EventIngester(
            store,
            self.run_id,
            applied_seq=seq,
            plain_mark=plain,
            offset=offset,
            position=position,
            end_run=False,
        )
        #: The size of the job's log at the last poll (a long log is polled less often).
        self.log_size = 0
        self.running_logged = False
        self.stop_sent = False
        self.reporter: StoreReporter | None = None

    # --- the cursor --------------------------------------------------------------------------------

    def _load_cursor(self) -> tuple[int, tuple[int, int], int, tuple[int, int]]:
        try:
            data = json.loads((self.folders.state_dir / CURSOR_FILE).read_text())
            seq, plain = int(data["seq"]), data["plain"]
            # A cursor without a text offset (older follower): from the log's start, skipped by seq.
            offset, position = int(data.get("offset", 0)), data.get("position", (0, 0))
            return seq, (int(plain[0]), int(plain[1])), offset, (int(position[0]), int(position[1]))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return 0, (0, 0), 0, (0, 0)  # from the start: the ingester skips what the store holds

    def _cursor(self) -> tuple[int, tuple[int, int], int, tuple[int, int]]:
        ingester = self.ingester
        return ingester.applied_seq, ingester.plain_mark, ingester.offset, ingester.position

    def _save_cursor(self) -> None:
        seq, plain, offset, position = self._cursor()
        body = {"seq": seq, "plain": list(plain), "offset": offset, "position": list(position)}
        atomic_write_text(self.folders.state_dir / CURSOR_FILE, json.dumps(body))

    # --- events --------------------------------------------------------------------------------

    def apply(self, text: str, *, final: bool = False) -> None:
        """Apply the job's whole log ``text`` from where the ingester's text offset ends (Ray serves a
        job's log only whole; a cut last line waits for the next read, or for ``final``), then save its
        position."""
        self.log_size = len(text)
        before = self._cursor()
        if len(text) >= self.ingester.offset:  # a shorter log is not this job's log: nothing to apply
            self.ingester.feed(text, offset=0)
            if final:
                self.ingester.finish()
        if self._cursor() != before:
            self._save_cursor()

    def _advance(self, target: RunStatus) -> None:
        status = self.store.get_run(self.run_id).status
        if status is RunStatus.QUEUED:
            lifecycle.prepare(self.store, self.run_id, phase="setting up the Ray job")
            status = RunStatus.PREPARING
        if target is RunStatus.RUNNING and status is RunStatus.PREPARING:
            lifecycle.start(self.store, self.run_id, phase="training on Ray")

    # --- the loop --------------------------------------------------------------------------------

    def follow(self) -> int:
        """Follow the job to its end and end the run; the exit code (0: the run ended as the job did)."""
        run = self.store.get_run(self.run_id)
        if run.status.is_terminal:
            mark_done(self.folders.state_dir)
            return 0
        reporter = self.reporter = StoreReporter(self.store, run, log_path=self.folders.log_path)
        reporter.adopt_children(self.store.list_child_runs(self.run_id))  # a resumed follower
        reporter.start()
        self.ingester.on_lines = reporter.write_log_file
        self.worker.reporter = reporter
        started = time.monotonic()
        try:
            info = self._watch()
            # Trials the ingester started are ended with the run by the worker's reporter.
            reporter.adopt_children(self.store.list_child_runs(self.run_id))
            code = self._end(info, time.monotonic() - started)
        except JobError as exc:
            code = self.worker.fail(exc.error)
        except Exception as exc:  # a bug or the store: the run must not stay Running for ever
            logger.exception("Following run %s failed", self.run_id)
            code = self.worker.fail(RunError.from_exception(exc))
        finally:
            reporter.close()
        mark_done(self.folders.state_dir)
        return code

    def _watch(self) -> JobState:
        reporter = self.reporter
        assert reporter is not None
        pending_since = time.monotonic()
        unreachable_since: float | None = None
        while True:
            try:
                self.client = self.client or self.cluster.job_client()
                info = get_job(self.client, self.run_id)
                self.apply(job_logs(self.client, self.run_id))
                unreachable_since = None
            except ClusterUnreachableError as exc:
                self.client = None
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_GIVE_UP_S:
                    raise JobError(RunError("ComputeError", exc.message, exc.hint)) from None
                time.sleep(POLL_S)
                continue
            if info.state is JobState.PENDING:
                if time.monotonic() - pending_since > PENDING_CHECK_S:
                    self._check_schedulable()
                    pending_since = time.monotonic()
            elif info.state is JobState.RUNNING:
                with contextlib.suppress(InvalidStateError):
                    self._advance(RunStatus.PREPARING)
                if not self.running_logged:
                    self.running_logged = True
                    reporter.log(f"Ray job {submission_id(self.run_id)} started on {self.cluster.address}.")
            if reporter.should_stop() and not self.stop_sent and not info.state.is_final:
                with contextlib.suppress(ClusterUnreachableError):  # tried again at the next poll
                    stop(self.client, self.run_id)
                    self.stop_sent = True
                    reporter.log(f"Stopping Ray job {submission_id(self.run_id)} ({reporter.stop_reason}).")
            if info.state.is_final:
                self.apply(job_logs(self.client, self.run_id), final=True)  # the last line, even unterminated
                return info.state
            # Ray serves a job's log only whole: poll a long log less often (1 s more per 200 kB).
            time.sleep(POLL_S * (1 + self.log_size // LOG_BYTES_PER_EXTRA_POLL_S))

    def _check_schedulable(self) -> None:
        reason = cluster_fit_reason(self.cluster, get_size(self.spec.size))
        if reason is None:
            return  # it fits; the cluster is busy: the run stays Queued
        with contextlib.suppress(RuntimeError, ClusterUnreachableError):
            stop(self.client, self.run_id)
        raise JobError(
            RunError(
                "ComputeError",
                f"Ray job {submission_id(self.run_id)} can never be scheduled: {reason}.",
                f"Create a compute of a size the cluster has (see {hints.command('compute', 'sizes')}) or "
                "add nodes.",
            )
        )

    def _end(self, state: JobState, seconds: float) -> int:
        result, error = self.ingester.result, self.ingester.error
        if result is not None and state in (JobState.SUCCEEDED, JobState.STOPPED):
            return self._finish_with_result(result, seconds)
        if error is not None:
            raise JobError(RunError(error.type or "TrainingError", error.message, error.hint))
        if state is JobState.STOPPED:
            status = self.store.get_run(self.run_id).status
            if status is not RunStatus.CANCEL_REQUESTED:
                with contextlib.suppress(InvalidStateError):
                    lifecycle.request_cancel(self.store, self.run_id)
            lifecycle.end_canceled(self.store, self.run_id)
            return 0
        if state is JobState.UNKNOWN:
            job = f"Ray job {submission_id(self.run_id)} on {self.cluster.address}"
            forgotten = f"the Ray cluster no longer knows {job}"  # as RayWorkerHandle says it
            raise JobError(
                lifecycle.lost_error(self.run_id, f"{forgotten} (it restarted, or the job was deleted)")
            )
        # The job ended without a word (killed, or its process exited): like a vanished local worker.
        detail = f"Ray job {submission_id(self.run_id)} ended {state.value}"
        try:
            message = get_job(self.client, self.run_id).message
        except ClusterUnreachableError:
            message = ""
        raise JobError(lifecycle.lost_error(self.run_id, f"{detail}: {message}" if message else detail))

    def _finish_with_result(self, event: Result, seconds: float) -> int:
        """Fetch the outputs through the dashboard, verify them against the job's ``result`` event, then
        end the run as the local worker does; the cluster's copy is removed afterwards."""
        staging = self.folders.state_dir / FETCHED_DIR
        shutil.rmtree(staging, ignore_errors=True)  # a half fetch of an earlier follower
        try:
            transfer = Transfer.from_dict(event.transfer) if event.transfer else None
            if transfer is None:
                raise OutputTransferError(
                    f"The Ray job of run '{self.run_id}' sent no outputs to fetch.",
                    hint="The cluster ran another modelbuilder version; run the training again.",
                )
            files = self._fetch(event, transfer, staging)
        except OutputTransferError as exc:
            self._remove_published(event)
            raise JobError(RunError("OutputTransferError", exc.message, exc.hint)) from None
        except ClusterUnreachableError as exc:  # no way to the outputs (nor to remove them) now
            raise JobError(RunError("ComputeError", exc.message, exc.hint)) from None
        try:
            result = replace(result_from_dict(dict(event.result), staging), files=files)
            return self.worker.finish(result, seconds)
        finally:
            self._remove_published(event)
            shutil.rmtree(staging, ignore_errors=True)

    def _fetch(self, event: Result, transfer: Transfer, staging: Path) -> dict[str, Path]:
        """Every output of ``event`` fetched into ``staging`` and verified; name -> path there.

        Raises:
            OutputTransferError: an output is missing or differs from the job's digest.
        """
        fetched = fetch_outputs(self.cluster, transfer, staging)
        expected = {str(k): str(v) for k, v in event.sha256.items()}
        bad = []
        for name in sorted(set(event.files) | set(expected)):
            path = fetched.get(str(name))
            if path is None or not path.exists():
                bad.append(f"{name} (not published by the job)")
            elif digest(path) != expected.get(str(name)):
                bad.append(f"{name} (sha256 differs from the job's)")
        if bad:
            raise OutputTransferError(
                f"The outputs of run '{self.run_id}' could not be verified: {', '.join(bad)}.",
                hint="Run the training again; if it fails the same way, check the cluster node's disk.",
            )
        return {name: path for name, path in fetched.items() if name in event.files}

    def _remove_published(self, event: Result) -> None:
        if not event.transfer or self.client is None:
            return
        with contextlib.suppress(OutputTransferError):
            remove_published(self.cluster, self.client, self.run_id, Transfer.from_dict(event.transfer))


def _lock(path: Path) -> Any:
    """An exclusive lock on ``path`` held until the returned handle is closed; None if another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def follow_run(spec: FollowSpec) -> int:
    """Open the run's workspace and follow its job (nothing when another follower already does)."""
    job = TrainingJob.from_dict(spec.job)
    folders = RunFolders.of_job(job)
    lock = _lock(folders.state_dir / LOCK_FILE)
    if lock is None:
        logger.info("Run %s is followed by another process already", job.run_id)
        return 0
    # The lock holder is the follower: its record names it, even when two were started at once.
    me = psutil.Process()
    WorkerRecord(job.run_id, me.pid, create_time=me.create_time(), backend="ray").save(
        folders.state_dir / FOLLOWER_RECORD
    )
    store = open_store(job.store_url, job.workspace)
    try:
        worker = Worker(job, store, open_artifact_store(job.artifact_root))
        return Follower(spec, store, worker).follow()
    finally:
        store.close()
        lock.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m modelbuilder.compute.ray.follow FOLLOW.json\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is for the CLI

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(143)  # stop following; the job runs on, a later attach resumes

    signal.signal(signal.SIGTERM, on_sigterm)
    return follow_run(FollowSpec.load(Path(args[0])))


if __name__ == "__main__":
    sys.exit(main())
