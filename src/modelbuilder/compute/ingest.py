"""``EventIngester``: applies a run's events (``compute.events``) to the workspace store, each once.

The reading side of a backend whose worker ships events (Ray) feeds it the job's log lines, in order, as
often as it likes: from the start again after a restart, or from where it stopped. It skips

- events it has applied already (``applied_seq``: keep it and pass it back to resume from an offset);
- while it *resumes* (until the first metric or log line the store does not hold), events whose content
  the store already holds: metric rows and log lines keep the event's exact time, so reading a whole log
  again writes no duplicate even when ``applied_seq`` was lost;
- heartbeats older than ``HEARTBEAT_FRESH_S`` (a replayed heartbeat says nothing about now).

Lines that are not events (the worker's own prints, tracebacks) become plain log lines, stamped with the
time of the event before them so a replay recognises them. Every status change goes through
``store.lifecycle``; a transition the run can no longer make (it ended, a cancel came first) is left as it
is. ``ended`` Completed verifies the run's artifacts against their records before ``complete``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..artifacts.local import ArtifactStore
from ..entities import RunError, RunStatus
from ..errors import InvalidStateError, ModelBuilderError
from ..store import lifecycle
from ..store.base import MetadataStore
from . import events as ev

logger = logging.getLogger(__name__)

#: A heartbeat older than this (seconds) is not applied: it is a replay, not a sign of life.
HEARTBEAT_FRESH_S = 30.0
_MAX_PHASE = 250
_STATUS_MOVES: dict[str, Callable[[MetadataStore, str, str | None], Any]] = {
    "preparing": lifecycle.prepare,
    "running": lifecycle.start,
    "finalizing": lifecycle.finalize,
}
#: Trial end states as a trainer may spell them -> the status of the trial's child run.
TRIAL_END = {
    "completed": RunStatus.COMPLETED,
    "succeeded": RunStatus.COMPLETED,
    "canceled": RunStatus.CANCELED,
    "cancelled": RunStatus.CANCELED,
    "stopped": RunStatus.CANCELED,
    "failed": RunStatus.FAILED,
}
_FINAL_METRICS = ("accuracy", "macro_accuracy", "seconds")

MetricRow = tuple[str, float, int, float | None]


class EventIngester:
    """Applies the events of one run to its workspace store.

    Args:
        store: the workspace's metadata store.
        run_id: the run (the events carry no run id: one event stream is one run).
        artifacts: the workspace's artifact store; given, artifact events and the run's end are verified
            against the files.
        applied_seq: the last sequence number applied before (0: none, or unknown).
        plain_mark: ``plain_mark`` as it was after the lines applied before (with ``applied_seq``).
        end_run: False: ``result``, ``error`` and ``ended`` events are only kept (``result``, ``error``,
            ``ended``) and the caller ends the run; the Ray follower does, as a local worker would
            (it copies and verifies the outputs, records the run log).
        on_lines: also called with each batch of log lines written (time, lines): the run's log file.
        clock: the time source (tests).
        offset: where the log text applied before ends (``offset`` after the chunks fed before, with
            ``position``): ``feed`` of text resumes there.
        position: ``position`` as it was at ``offset``.
    """

    def __init__(
        self,
        store: MetadataStore,
        run_id: str,
        *,
        artifacts: ArtifactStore | None = None,
        applied_seq: int = 0,
        plain_mark: tuple[int, int] = (0, 0),
        end_run: bool = True,
        on_lines: Callable[[float, list[str]], None] | None = None,
        clock: Callable[[], float] = time.time,
        offset: int = 0,
        position: tuple[int, int] = (0, 0),
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.artifacts = artifacts
        self.applied_seq = applied_seq
        self.clock = clock
        #: The run status the last applied heartbeat returned (``CancelRequested``: tell the worker).
        self.last_status: RunStatus | None = None
        #: The last result event seen (the outputs' digests, for the backend that fetches them).
        self.result: ev.Result | None = None
        #: The error and ended events seen (applied only when ``end_run``).
        self.error: ev.Error | None = None
        self.ended: ev.Ended | None = None
        self.end_run = end_run
        self.on_lines = on_lines
        self._resuming = True
        self._known_metrics: set[tuple[str, str, int, float]] | None = None
        self._known_lines: set[tuple[float, str]] | None = None
        self._children: dict[str, str] | None = None
        self._phase = ""
        self._last_time = 0.0
        self._metrics: dict[str, list[MetricRow]] = {}
        self._lines: list[tuple[float, str]] = []
        self._pending_seq = applied_seq
        self._plain_mark = plain_mark
        # Text feeding: the log text received so far ends at ``_received``; ``_partial`` is its last,
        # unterminated line (kept until a later chunk completes it); ``_position`` is the place (event
        # before, index after it) of the last complete line.
        self._received = offset
        self._partial = ""
        self._position = position

    @property
    def plain_mark(self) -> tuple[int, int]:
        """Where the plain lines applied so far end (the event before, the index after it): keep it with
        ``applied_seq`` to resume feeding the same log without applying a plain line twice."""
        return self._plain_mark

    # --- feeding ----------------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Where the complete lines fed as text end in the log (characters): keep it with ``position``,
        ``applied_seq`` and ``plain_mark`` to resume feeding exactly there; a partial last line is not
        counted (it is read again, whole)."""
        return self._received - len(self._partial)

    @property
    def position(self) -> tuple[int, int]:
        """The place of the last complete line fed as text (the event before it, its index after it)."""
        return self._position

    def feed(self, log: str | Iterable[str], *, offset: int | None = None) -> int:
        """Apply the events of a run's log; other lines become log lines. Returns how many were written.

        ``log`` is either

        - a chunk of the log's text (``str``) that continues the text fed before (or starts at
          ``offset``, its place in the log: a chunk that overlaps what was fed is applied from where
          that ended). A last line without its newline is kept, not applied, until a later chunk
          completes it (``finish`` applies it at the log's end): a line cut by a read is never applied
          half, nor twice;
        - or complete lines from the log's start (each call may give the log again, longer).

        Raises:
            ValueError: ``offset`` is past the end of the text fed so far (a gap in the log).
        """
        if not isinstance(log, str):
            written, _ = self._feed_lines(log, (0, 0))
            return written
        if offset is not None:
            if offset > self._received:
                raise ValueError(
                    f"Log chunk of run {self.run_id} starts at {offset}, after the {self._received} "
                    "characters read so far: a part of the log is missing."
                )
            log = log[self._received - offset :]
        self._received += len(log)
        *lines, self._partial = (self._partial + log).split("\n")
        written, self._position = self._feed_lines(lines, self._position)
        return written

    def finish(self) -> int:
        """The log ended: apply its last line even without a newline. Returns how many were written."""
        if not self._partial:
            return 0
        line, self._partial = self._partial, ""
        written, self._position = self._feed_lines([line], self._position)
        return written

    def _feed_lines(self, lines: Iterable[str], start: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        items: list[ev.RunEvent] = []
        (previous, index), mark = start, self._plain_mark
        for line in lines:
            event = ev.decode(line)
            if event is None:
                # A plain line's place is (the event before it, its index after that event): a line this
                # ingester has applied is not applied again when the same lines come again.
                index += 1
                if line.strip() and (previous, index) > self._plain_mark:
                    items.append(ev.Log(seq=0, time=self._last_time, line=line.rstrip("\r")))
                    mark = max(mark, (previous, index))
                continue
            self._last_time = event.time  # plain lines after it are stamped with its time
            previous, index = event.seq, 0
            items.append(event)
        written = self.apply(items)
        self._plain_mark = mark
        return written, (previous, index)

    def apply(self, events: Iterable[ev.RunEvent]) -> int:
        """Apply events in order (seq 0: an unnumbered plain log line); returns how many were written.

        Raises:
            Exception: the store failed; ``applied_seq`` is where to pick up again.
        """
        written = 0
        for event in events:
            self._track(event)
            if 0 < event.seq <= self.applied_seq or 0 < event.seq <= self._pending_seq:
                continue
            if isinstance(event, ev.Metric | ev.Log):
                written += self._buffer(event)
            else:
                self.flush()
                written += self._apply_one(event)
                self._advance(event.seq)
        self.flush()
        return written

    def _track(self, event: ev.RunEvent) -> None:
        # What the events before say is needed to apply the ones after (also when they are skipped).
        if isinstance(event, ev.Phase):
            self._phase = event.name
        elif isinstance(event, ev.Result):
            self.result = event  # a caller that ends the run needs it also after a restart
        elif isinstance(event, ev.Error):
            self.error = event
        elif isinstance(event, ev.Ended):
            self.ended = event
        if event.seq:
            self._last_time = event.time

    def _advance(self, seq: int) -> None:
        if seq > self.applied_seq:
            self.applied_seq = seq
        self._pending_seq = max(self._pending_seq, self.applied_seq)

    # --- metrics and log lines, batched ------------------------------------------------------------

    def _buffer(self, event: ev.Metric | ev.Log) -> int:
        if isinstance(event, ev.Metric):
            target = self.run_id if event.trial is None else self._child(event.trial)
            fresh = not self._holds_metric(target, event)
            if fresh:
                self._metrics.setdefault(target, []).append(
                    (event.key, float(event.value), int(event.step), event.time)
                )
        else:
            texts = event.line.splitlines() or [""]
            fresh = not all(self._holds_line(event.time, text) for text in texts)
            if fresh:
                self._lines.extend((event.time, text) for text in texts)
        if fresh and event.seq:
            self._resuming = False  # the first event the store does not hold: the rest is new
        if event.seq:
            self._pending_seq = max(self._pending_seq, event.seq)
        return int(fresh)

    def flush(self) -> None:
        """Write the buffered metrics and log lines, then count them applied."""
        lines, self._lines = self._lines, []
        start = 0
        for i in range(1, len(lines) + 1):  # one write per run of lines with the same time
            if i == len(lines) or lines[i][0] != lines[start][0]:
                self._log_lines(lines[start][0], [t for _, t in lines[start:i]])
                start = i
        metrics, self._metrics = self._metrics, {}
        for target, batch in metrics.items():
            self._write_metrics(target, batch)
        self._advance(self._pending_seq)

    def _write_metrics(self, target: str, batch: list[MetricRow]) -> None:
        try:
            self.store.log_metrics(target, batch)
        except InvalidStateError as exc:  # the run (or trial) ended: later values have nowhere to go
            logger.warning("Metrics of run %s dropped: %s", target, exc)
        except ModelBuilderError:
            for row in batch:  # one bad key must not hold back the others
                try:
                    self.store.log_metrics(target, [row])
                except ModelBuilderError as exc:
                    logger.warning("Metric %s of run %s dropped: %s", row[0], target, exc)

    def _holds_metric(self, target: str, event: ev.Metric) -> bool:
        if not self._resuming:
            return False
        if self._known_metrics is None:
            self._known_metrics = set()
            for run_id in (self.run_id, *self._child_ids().values()):
                for key, history in self.store.get_metric_histories(run_id).items():
                    self._known_metrics.update((run_id, key, m.step, m.timestamp) for m in history)
        return (target, event.key, int(event.step), event.time) in self._known_metrics

    def _holds_line(self, stamp: float, text: str) -> bool:
        if not self._resuming:
            return False
        if self._known_lines is None:
            lines = self.store.get_log_lines(self.run_id, 0, limit=None)
            self._known_lines = {(line.timestamp, line.text) for line in lines}
        return (stamp, text) in self._known_lines

    # --- trials -----------------------------------------------------------------------------------

    def _child_ids(self) -> dict[str, str]:
        if self._children is None:
            self._children = {c.name: c.id for c in self.store.list_child_runs(self.run_id) if c.name}
        return self._children

    def _child(self, trial: str, params: dict[str, Any] | None = None) -> str:
        name = trial[:_MAX_PHASE]
        children = self._child_ids()
        if name not in children:
            run = self.store.get_run(self.run_id)
            child = self.store.create_run(
                run.experiment_id,
                compute=run.compute,
                params=params or {},
                parent_run_id=self.run_id,
                name=name,
                status=RunStatus.RUNNING,
            )
            children[name] = child.id
        return children[name]

    # --- everything else, one at a time -------------------------------------------------------------

    def _apply_one(self, event: ev.RunEvent) -> int:
        try:
            return self._dispatch(event)
        except InvalidStateError as exc:  # the run can no longer take it (ended, cancel came first)
            logger.info("Run %s: %s event not applied: %s", self.run_id, event.kind, exc)
            return 0

    def _dispatch(self, event: ev.RunEvent) -> int:
        store, run_id = self.store, self.run_id
        if isinstance(event, ev.Started):
            where = f" on {event.host}" if event.host else ""
            self._write_line(event.time, f"Worker started{where} (pid {event.pid}).")
            lifecycle.start(store, run_id)
        elif isinstance(event, ev.Status):
            move = _STATUS_MOVES.get(event.status.lower())
            if move is None:
                logger.warning("Run %s: status event %r ignored", run_id, event.status)
                return 0
            move(store, run_id, event.phase)
        elif isinstance(event, ev.Phase):
            text = f"{event.name}: {event.message}" if event.message else event.name
            store.set_run_phase(run_id, text[:_MAX_PHASE])
            self._write_line(
                event.time, f"[{event.name}] {event.message}" if event.message else f"[{event.name}]"
            )
        elif isinstance(event, ev.Progress):
            count = f"{event.completed}/{event.total}" if event.total is not None else str(event.completed)
            store.set_run_phase(run_id, f"{self._phase or event.task}: {event.task} {count}"[:_MAX_PHASE])
        elif isinstance(event, ev.TrialStarted):
            self._child(event.trial, event.params)
        elif isinstance(event, ev.TrialEnded):
            self._end_trial(event)
        elif isinstance(event, ev.Heartbeat):
            if self.clock() - event.time > HEARTBEAT_FRESH_S:
                return 0
            self.last_status = store.heartbeat(run_id)
            for child in store.list_child_runs(run_id):
                if not child.status.is_terminal:
                    store.heartbeat(child.id)
        elif isinstance(event, ev.ArtifactWritten):
            return self._record_artifact(event)
        elif isinstance(event, ev.Result):
            if self.end_run:  # else the caller records them as it ends the run
                self._final_metrics(event.result, event.time)
        elif isinstance(event, ev.Error):
            if not self.end_run:
                return 0
            error = RunError(event.type, event.message, event.hint)
            lifecycle.end_children(
                store, run_id, RunStatus.FAILED, RunError("TrainingError", "the run failed")
            )
            lifecycle.fail(store, run_id, error)
        elif isinstance(event, ev.Ended):
            if not self.end_run:
                return 0
            self._end(event)
        else:
            logger.debug(
                "Run %s: event of unknown kind %r skipped", run_id, getattr(event, "name", event.kind)
            )
            return 0
        return 1

    def _write_line(self, stamp: float, text: str) -> None:
        if not self._holds_line(stamp, text):
            self._log_lines(stamp, [text])

    def _log_lines(self, stamp: float, texts: list[str]) -> None:
        self.store.log_lines(self.run_id, texts, timestamp=stamp)
        if self.on_lines is not None:
            self.on_lines(stamp, texts)

    def _end_trial(self, event: ev.TrialEnded) -> None:
        child = self._child(event.trial)
        latest = self.store.get_latest_metrics(child)
        rows: list[MetricRow] = [
            (key, float(value), latest[key].step if key in latest else 0, event.time)
            for key, value in event.metrics.items()
            if not self._holds_metric(child, ev.Metric(key=key, value=value, step=0, time=event.time))
        ]
        if rows:
            self._write_metrics(child, rows)
        end = TRIAL_END.get(event.status.lower(), RunStatus.FAILED)
        if not self.store.get_run(child).status.is_terminal:
            lifecycle.end(self.store, child, end, RunError("TrainingError", f"trial ended {event.status}"))

    def _record_artifact(self, event: ev.ArtifactWritten) -> int:
        if self.artifacts is not None:
            actual = self.artifacts.describe(self.run_id, event.name)
            if (actual.size, actual.sha256) != (event.size, event.sha256):
                logger.warning(
                    "Artifact %s of run %s differs from its event (%s bytes, sha256 %s...): not recorded",
                    event.name,
                    self.run_id,
                    actual.size,
                    actual.sha256[:12],
                )
                return 0
        self.store.log_artifact(self.run_id, event.name, event.size, event.sha256)
        return 1

    def _final_metrics(self, result: dict[str, Any], stamp: float) -> None:
        values = {
            key: float(result[key]) for key in _FINAL_METRICS if isinstance(result.get(key), int | float)
        }
        if isinstance(result.get("skipped_images"), list):
            values["skipped_images"] = float(len(result["skipped_images"]))
        latest = self.store.get_latest_metrics(self.run_id)
        rows: list[MetricRow] = []
        for key, value in values.items():
            step = latest[key].step if key in latest else 0
            if not self._holds_metric(self.run_id, ev.Metric(key=key, value=value, step=step, time=stamp)):
                rows.append((key, value, step, stamp))  # the event's time: a replay recognises them
        if rows:
            self._write_metrics(self.run_id, rows)

    def _end(self, event: ev.Ended) -> None:
        store, run_id = self.store, self.run_id
        if event.status.lower() == "completed" and self.artifacts is not None:
            bad = self.artifacts.find_mismatches(run_id, store.list_artifacts(run_id))
            if bad:
                lifecycle.end_children(
                    store, run_id, RunStatus.FAILED, RunError("TrainingError", "the run failed")
                )
                lifecycle.fail(
                    store,
                    run_id,
                    RunError(
                        "ComputeError",
                        f"Artifacts of run '{run_id}' failed verification after they were copied back: "
                        f"{', '.join(bad)}.",
                        "Run it again; if it fails the same way, check the disk and the network.",
                    ),
                )
                return
        canceled = event.status.lower() in ("canceled", "cancelled") or (
            store.get_run(run_id).status is RunStatus.CANCEL_REQUESTED
        )
        final = RunStatus.CANCELED if canceled else RunStatus.COMPLETED
        lifecycle.end_children(store, run_id, final)
        lifecycle.end(store, run_id, final)
