"""``StoreReporter``: the worker's ``Reporter``, carrying trainer events to the workspace store.

Metrics and log lines are buffered and written in batches (every ``flush_interval`` seconds, and
whenever a trial starts or ends), so a trainer that reports thousands of values costs a few small
transactions. A background thread also sends heartbeats for the run and its active trials; the status a
heartbeat returns is how a cancel request (``CancelRequested``) reaches ``should_stop()``.

Every method is safe to call from the trainer's threads and never raises. A batch the store refuses for a
passing reason (SQLite "database is locked", a dropped connection) stays queued and is written again with
backoff (``WRITE_RETRY_FIRST_S`` doubling to ``WRITE_RETRY_MAX_S``); nothing is lost silently. When writes
keep failing for ``WRITE_GIVE_UP_S``, or more than ``MAX_PENDING`` values wait (memory stays bounded), the
reporter gives up: ``write_error`` holds a ``WorkspaceBusyError``, the trainer is asked to stop, and
``drain`` (what the worker calls before it ends the run) raises it, so the run fails with that error
instead of ending Completed with holes. When the run has become terminal behind the worker's back (the
reaper marked it lost), the reporter asks the trainer to stop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from ..entities import Run, RunError, RunStatus
from ..errors import InvalidStateError, WorkspaceBusyError
from ..store import lifecycle
from ..store.base import MetadataStore

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 2.0
_MAX_PHASE = 250
#: First wait before a failed batch is written again; it doubles up to ``WRITE_RETRY_MAX_S``.
WRITE_RETRY_FIRST_S = 0.25
WRITE_RETRY_MAX_S = 8.0
#: Failed writes for this long (seconds) make the run fail instead of waiting on.
WRITE_GIVE_UP_S = 120.0
#: Metrics and log lines that may wait for the store at most; beyond, the reporter gives up.
MAX_PENDING = 200_000

#: Trial end states as a trainer may spell them -> the run status of the trial's child run.
_TRIAL_END = {
    "completed": RunStatus.COMPLETED,
    "succeeded": RunStatus.COMPLETED,
    "canceled": RunStatus.CANCELED,
    "cancelled": RunStatus.CANCELED,
    "stopped": RunStatus.CANCELED,
    "failed": RunStatus.FAILED,
}


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(json.dumps(params, default=str)))


class StoreReporter:
    """A ``Reporter`` that writes to the store of the run's workspace and to a local log file.

    Args:
        store: the workspace's metadata store.
        run: the run the worker executes.
        log_path: the run log file (appended to; uploaded as ``logs/run.log`` at the end).
        on_artifact: records a finished output (``path``, ``name``); called in the trainer's thread.
        flush_interval, heartbeat_interval: seconds between batched writes and between heartbeats.
        give_up_s, max_pending: when failed writes make the run fail (``WRITE_GIVE_UP_S``,
            ``MAX_PENDING``).
    """

    def __init__(
        self,
        store: MetadataStore,
        run: Run,
        *,
        log_path: Path,
        on_artifact: Callable[[Path, str], None] | None = None,
        flush_interval: float = FLUSH_INTERVAL_S,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
        give_up_s: float = WRITE_GIVE_UP_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.store = store
        self.run = run
        self.log_path = log_path
        self.on_artifact = on_artifact
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.stop_reason: str | None = None
        #: True once the run was ended by someone else (e.g. marked lost): nothing more may be recorded.
        self.run_ended_elsewhere = False
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._metrics: dict[str, list[tuple[str, float, int, float | None]]] = {}
        self._lines: list[str] = []
        self._phase_name = ""
        self._phase_text: str | None = None
        self._written_phase: str | None = None
        self._children: dict[str, str] = {}
        self._active_children: set[str] = set()
        self._max_step: dict[tuple[str, str], int] = {}
        self._thread: threading.Thread | None = None
        self.give_up_s = give_up_s
        self.max_pending = max_pending
        #: Set when writes kept failing: the run must fail with it (``drain`` raises it).
        self.write_error: WorkspaceBusyError | None = None
        self._failing_since: float | None = None
        self._retry_delay = WRITE_RETRY_FIRST_S
        self._retry_at = 0.0
        self._last_failure = ""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> StoreReporter:
        """Start the background thread that flushes batches and sends heartbeats."""
        self._thread = threading.Thread(target=self._loop, name="mb-reporter", daemon=True)
        self._thread.start()
        return self

    #: Set by the worker just before it ends the run itself, so the heartbeat does not mistake the
    #: terminal status for another process ending the run.
    ending = False

    def close(self) -> None:
        """Stop the background thread and write what is still buffered."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.drain()
        except WorkspaceBusyError as exc:  # the worker has ended the run already; say what was lost
            logger.error("%s", exc.message)
        self._log_file.close()

    def request_stop(self, reason: str) -> None:
        """Make ``should_stop()`` true (cancel request, SIGTERM, run ended elsewhere)."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()
            self.log(f"Stop requested: {reason}")

    def _loop(self) -> None:
        last_beat = 0.0
        while not self._closed.wait(self.flush_interval):
            if time.monotonic() >= self._retry_at:  # after a failed write: its backoff
                self.flush()
            if time.monotonic() - last_beat >= self.heartbeat_interval:
                self.heartbeat()
                last_beat = time.monotonic()

    def heartbeat(self) -> RunStatus | None:
        """Tell the store the worker lives (run and active trials); act on the status it returns."""
        try:
            status = self.store.heartbeat(self.run.id)
            for child in list(self._active_children):
                self.store.heartbeat(child)
        except Exception as exc:  # never let the heartbeat thread die
            logger.warning("Heartbeat of run %s failed: %s", self.run.id, exc)
            return None
        if status is RunStatus.CANCEL_REQUESTED:
            self.request_stop("cancel requested")
        elif status.is_terminal and not self.ending:
            self.run_ended_elsewhere = True
            self.request_stop(f"the run was marked {status.value} by another process")
        return status

    # --- Reporter ---------------------------------------------------------------------------------

    def phase(self, name: str, message: str = "") -> None:
        with self._buffer_lock:
            self._phase_name = name
            self._phase_text = f"{name}: {message}" if message else name
        self.log(f"[{name}] {message}" if message else f"[{name}]")

    def progress(self, task: str, completed: int, total: int | None) -> None:
        count = f"{completed}/{total}" if total is not None else str(completed)
        with self._buffer_lock:
            self._phase_text = f"{self._phase_name or task}: {task} {count}"

    def metric(self, key: str, value: float, step: int = 0, trial: str | None = None) -> None:
        try:
            run_id = self.run.id if trial is None else self._child_id(trial)
            with self._buffer_lock:
                self._metrics.setdefault(run_id, []).append((key, float(value), int(step), time.time()))
                marker = (run_id, key)
                self._max_step[marker] = max(self._max_step.get(marker, int(step)), int(step))
        except Exception as exc:
            logger.warning("Metric %s of run %s dropped: %s", key, self.run.id, exc)

    def log(self, line: str) -> None:
        text = str(line).rstrip("\n")
        with self._buffer_lock:
            self._lines.append(text)
            stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            try:
                for part in text.split("\n"):
                    self._log_file.write(f"[{stamp}] {part}\n")
                self._log_file.flush()
            except (OSError, ValueError):  # closed or full disk: the store still gets the line
                pass

    def write_log_file(self, stamp: float, lines: list[str]) -> None:
        """Append lines that reached the store another way (the Ray follower's ingester) to the log file."""
        when = datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")
        with self._buffer_lock:
            try:
                for text in lines:
                    for part in text.split("\n"):
                        self._log_file.write(f"[{when}] {part}\n")
                self._log_file.flush()
            except (OSError, ValueError):  # closed or full disk: the store has the lines
                pass

    def trial_started(self, trial: str, params: dict[str, Any]) -> None:
        try:
            self._child_id(trial, params)
        except Exception as exc:
            logger.warning("Trial %s of run %s could not be recorded: %s", trial, self.run.id, exc)

    def trial_ended(self, trial: str, status: str, metrics: dict[str, float]) -> None:
        try:
            child = self._child_id(trial)
            for key, value in metrics.items():
                step = self._max_step.get((child, key), 0)
                self.metric(key, value, step, trial)
            self.flush()
            end_status = _TRIAL_END.get(str(status).lower(), RunStatus.FAILED)
            error = RunError("TrainingError", f"trial ended {status}")
            with self._write_lock:
                self._active_children.discard(child)
                lifecycle.end(self.store, child, end_status, error)
        except Exception as exc:
            logger.warning("End of trial %s of run %s could not be recorded: %s", trial, self.run.id, exc)

    def artifact(self, path: Path, name: str) -> None:
        if self.on_artifact is None:
            return
        try:
            self.on_artifact(Path(path), name)
        except Exception as exc:  # recorded again from the result at the end
            logger.warning("Artifact %s of run %s not recorded yet: %s", name, self.run.id, exc)

    def should_stop(self) -> bool:
        return self._stop.is_set()

    # --- store writes -----------------------------------------------------------------------------

    def _child_id(self, trial: str, params: dict[str, Any] | None = None) -> str:
        with self._write_lock:
            if trial in self._children:
                return self._children[trial]
            self.flush()
            child = self.store.create_run(
                self.run.experiment_id,
                compute=self.run.compute,
                params=_json_safe(params or {}),
                parent_run_id=self.run.id,
                name=trial[:_MAX_PHASE],
                status=RunStatus.RUNNING,
            )
            self._children[trial] = child.id
            self._active_children.add(child.id)
            return child.id

    @property
    def child_runs(self) -> dict[str, str]:
        """Trial name -> child run id, for the trials seen so far."""
        return dict(self._children)

    def adopt_children(self, children: Iterable[Run]) -> None:
        """Know trials recorded before this reporter (a Ray run's follower resuming after a restart), so
        their later events go to the same child runs instead of new ones."""
        with self._write_lock:
            for child in children:
                if child.name and child.name not in self._children:
                    self._children[child.name] = child.id
                    if not child.status.is_terminal:
                        self._active_children.add(child.id)

    def end_active_children(self, status: RunStatus, error: RunError | None = None) -> None:
        """End trials that are still active (the run itself is ending)."""
        with self._write_lock:
            for child in sorted(self._active_children):
                try:
                    lifecycle.end(self.store, child, status, error)
                except Exception as exc:
                    logger.warning("Trial run %s could not be ended: %s", child, exc)
            self._active_children.clear()

    def flush(self) -> bool:
        """Write the buffered metrics, log lines and phase now; True when nothing is left to write (a
        batch whose write failed stays queued for the next try)."""
        with self._write_lock:
            with self._buffer_lock:
                metrics, self._metrics = self._metrics, {}
                lines, self._lines = self._lines, []
                phase = self._phase_text
            unwritten_lines: list[str] = []
            unwritten: dict[str, list[tuple[str, float, int, float | None]]] = {}
            if lines and not self._write(lambda: self.store.log_lines(self.run.id, lines), "log lines"):
                unwritten_lines = lines
            for run_id, batch in metrics.items():
                if not self._write(partial(self.store.log_metrics, run_id, batch), f"{len(batch)} metrics"):
                    unwritten[run_id] = batch
            phase_ok = True
            if phase is not None and phase != self._written_phase:
                phase_ok = self._write(
                    lambda: self.store.set_run_phase(self.run.id, phase[:_MAX_PHASE]), "phase"
                )
                if phase_ok:
                    self._written_phase = phase
            if unwritten_lines or unwritten:
                with self._buffer_lock:  # back in front of what came meanwhile: order is kept
                    self._lines = unwritten_lines + self._lines
                    for run_id, batch in unwritten.items():
                        self._metrics[run_id] = batch + self._metrics.get(run_id, [])
            ok = phase_ok and not unwritten_lines and not unwritten
            self._note(ok)
            return ok

    def drain(self) -> None:
        """Flush, waiting out failed writes (with backoff) until everything is written.

        Raises:
            WorkspaceBusyError: writes kept failing past ``give_up_s`` (or too much waited).
        """
        while not self.flush() and self.write_error is None:
            time.sleep(max(0.0, self._retry_at - time.monotonic()))
        if self.write_error is not None:
            raise self.write_error

    def _pending(self) -> int:
        with self._buffer_lock:
            return len(self._lines) + sum(len(batch) for batch in self._metrics.values())

    def _note(self, ok: bool) -> None:
        now = time.monotonic()
        if ok:
            self._failing_since, self._retry_delay, self._retry_at = None, WRITE_RETRY_FIRST_S, 0.0
            return
        if self._failing_since is None:
            self._failing_since = now
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, WRITE_RETRY_MAX_S)
        pending = self._pending()
        if self.write_error is None and (
            now - self._failing_since > self.give_up_s or pending > self.max_pending
        ):
            self._give_up(now - self._failing_since, pending)

    def _give_up(self, seconds: float, pending: int) -> None:
        with self._buffer_lock:  # the run fails now; what waited is counted in the error, not kept
            self._lines, self._metrics = [], {}
        self.write_error = WorkspaceBusyError(
            f"Run '{self.run.id}' could not write to the workspace store for {seconds:.0f} s "
            f"({pending} metric values and log lines not written; last error: {self._last_failure}).",
            hint="Another process keeps the workspace database busy (or it is unreachable); stop it or wait, "
            "then start the run again.",
        )
        self.request_stop("the workspace store could not be written")

    def _write(self, action: Callable[[], object], what: str) -> bool:
        """Do one store write; False when it failed and should be tried again."""
        try:
            action()
        except InvalidStateError as exc:  # the run refuses it for good: nothing to try again
            logger.warning("Run %s refused %s: %s", self.run.id, what, exc)
            try:
                ended = self.store.get_run(self.run.id).status.is_terminal
            except Exception:
                ended = False
            if ended:
                self.run_ended_elsewhere = True
                self.request_stop("the run was ended by another process")
        except Exception as exc:
            self._last_failure = f"{type(exc).__name__}: {exc}"
            logger.warning("Writing %s of run %s failed (kept, written again): %s", what, self.run.id, exc)
            return False
        return True
