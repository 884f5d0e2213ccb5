"""``StoreReporter``: the worker's ``Reporter``, carrying trainer events to the workspace store.

Metrics and log lines are buffered and written in batches (every ``flush_interval`` seconds, and
whenever a trial starts or ends), so a trainer that reports thousands of values costs a few small
transactions. A background thread also sends heartbeats for the run and its active trials; the status a
heartbeat returns is how a cancel request (``CancelRequested``) reaches ``should_stop()``.

Every method is safe to call from the trainer's threads and never raises: a store error is logged and,
when the run has become terminal behind the worker's back (the reaper marked it lost), the reporter asks
the trainer to stop.
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
from ..errors import InvalidStateError
from ..store import lifecycle
from ..store.base import MetadataStore

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 2.0
_MAX_PHASE = 250

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
        self.flush()
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

    def flush(self) -> None:
        """Write the buffered metrics, log lines and phase now."""
        with self._write_lock:
            with self._buffer_lock:
                metrics, self._metrics = self._metrics, {}
                lines, self._lines = self._lines, []
                phase = self._phase_text
            if lines:
                self._write(lambda: self.store.log_lines(self.run.id, lines), "log lines")
            for run_id, batch in metrics.items():
                self._write(partial(self.store.log_metrics, run_id, batch), f"{len(batch)} metrics")
            if phase is not None and phase != self._written_phase:
                self._written_phase = phase
                self._write(lambda: self.store.set_run_phase(self.run.id, phase[:_MAX_PHASE]), "phase")

    def _write(self, action: Callable[[], object], what: str) -> None:
        try:
            action()
        except InvalidStateError as exc:
            logger.warning("Run %s refused %s: %s", self.run.id, what, exc)
            try:
                ended = self.store.get_run(self.run.id).status.is_terminal
            except Exception:
                ended = False
            if ended:
                self.run_ended_elsewhere = True
                self.request_stop("the run was ended by another process")
        except Exception as exc:
            logger.warning("Writing %s of run %s failed: %s", what, self.run.id, exc)
