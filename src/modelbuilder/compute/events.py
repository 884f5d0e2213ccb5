"""A run's events as data, one JSON line each, and how they reach the workspace store exactly once.

A backend whose worker cannot write to the store (a Ray job: the cluster never gets the store's
credentials) ships these events instead; the submitting side (``train``, ``run attach``, the portal)
reads them back and applies them with a ``compute.ingest.EventIngester`` (or ``apply_event``). The
local backend's worker writes to the store directly and needs none of this. One event per line, found
anywhere in a log line::

    @mb-event {"v":1,"seq":17,"t":1796061657.6,"kind":"metric","key":"val_accuracy","value":0.91,...}

``seq`` counts from 1 per run (per job attempt), so no two lines are equal (log deduplication never folds
them) and an ingester applies each event once: it skips what it has applied (``applied_seq``, which a
caller may keep and pass back after a restart) and, when it starts from scratch on a run that already has
data, skips events whose content the store already holds (metric rows and log lines keep the event's
exact time), so reading a whole log again writes no duplicate. Status changes go through
``store.lifecycle`` only; a run is ``Completed`` by an ``ended`` event only after its recorded artifacts
were verified.

Kinds (``EVENT_TYPES``): started, status, phase, progress, metric, log, trial_started, trial_ended,
heartbeat, artifact, result, error, ended.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TextIO

if TYPE_CHECKING:
    from ..artifacts.local import ArtifactStore
    from ..store.base import MetadataStore

EVENT_PREFIX = "@mb-event "
EVENTS_VERSION = 1

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunEvent:
    """Base of every event: its place in the run's sequence and when it happened (seconds since epoch)."""

    kind: ClassVar[str] = ""
    seq: int = 0
    time: float = 0.0

    def fields(self) -> dict[str, Any]:
        """The event's own fields (what goes on the line besides v, seq, t and kind)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("seq", "time")
        }


@dataclass(frozen=True, kw_only=True)
class Started(RunEvent):
    """The worker took the run (it moves ``Queued -> Preparing -> Running``)."""

    kind: ClassVar[str] = "started"
    pid: int = 0
    host: str = ""
    cwd: str = ""


@dataclass(frozen=True, kw_only=True)
class Status(RunEvent):
    """A status the worker moved the run to while it runs: ``Preparing``, ``Running`` or ``Finalizing``."""

    kind: ClassVar[str] = "status"
    status: str
    phase: str | None = None


@dataclass(frozen=True, kw_only=True)
class Phase(RunEvent):
    kind: ClassVar[str] = "phase"
    name: str
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Progress(RunEvent):
    kind: ClassVar[str] = "progress"
    task: str
    completed: int
    total: int | None = None


@dataclass(frozen=True, kw_only=True)
class Metric(RunEvent):
    """A metric value of the run, or of its trial ``trial`` (a child run)."""

    kind: ClassVar[str] = "metric"
    key: str
    value: float
    step: int = 0
    trial: str | None = None


@dataclass(frozen=True, kw_only=True)
class Log(RunEvent):
    kind: ClassVar[str] = "log"
    line: str


@dataclass(frozen=True, kw_only=True)
class TrialStarted(RunEvent):
    kind: ClassVar[str] = "trial_started"
    trial: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TrialEnded(RunEvent):
    """A trial ended: ``status`` is Completed, Canceled or Failed (as the trainer spells it)."""

    kind: ClassVar[str] = "trial_ended"
    trial: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Heartbeat(RunEvent):
    kind: ClassVar[str] = "heartbeat"


@dataclass(frozen=True, kw_only=True)
class ArtifactWritten(RunEvent):
    """An output the backend has put in the workspace's artifact store (its bytes travel separately)."""

    kind: ClassVar[str] = "artifact"
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Result(RunEvent):
    """The trainer's result (``outputs.result_to_dict``) and the sha256 of each output, as written;
    ``transfer``: where a Ray job published the outputs for the submitter to fetch (``ray.transfer``)."""

    kind: ClassVar[str] = "result"
    result: dict[str, Any]
    sha256: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    output_dir: str = ""
    transfer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Error(RunEvent):
    """How the run failed: the error's class name, message and hint (``entities.RunError``)."""

    kind: ClassVar[str] = "error"
    type: str
    message: str
    hint: str | None = None


@dataclass(frozen=True, kw_only=True)
class Ended(RunEvent):
    """The run ended ``Completed`` or ``Canceled`` (partial result kept) once its outputs are recorded."""

    kind: ClassVar[str] = "ended"
    status: str


@dataclass(frozen=True, kw_only=True)
class Unknown(RunEvent):
    """An event of a kind this version does not know (a newer worker): kept, not applied."""

    kind: ClassVar[str] = "unknown"
    name: str
    data: dict[str, Any] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[RunEvent]] = {
    cls.kind: cls
    for cls in (
        Started,
        Status,
        Phase,
        Progress,
        Metric,
        Log,
        TrialStarted,
        TrialEnded,
        Heartbeat,
        ArtifactWritten,
        Result,
        Error,
        Ended,
    )
}


# --- the line codec -------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    # JSON has no NaN or infinity; a diverged loss is still worth showing, as text.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def encode(event: RunEvent) -> str:
    """The event as one line (no newline), prefix included."""
    if isinstance(event, Unknown):
        kind, data = event.name, dict(event.data)
    else:
        kind, data = event.kind, {key: _finite(value) for key, value in event.fields().items()}
    body = {"v": EVENTS_VERSION, "seq": event.seq, "t": event.time, "kind": kind, **data}
    return EVENT_PREFIX + json.dumps(body, default=str, separators=(",", ":"))


def decode(line: str) -> RunEvent | None:
    """The event on ``line`` (anywhere in it: a log may prefix lines), or None when it holds none, is
    garbled, or is of another format version."""
    start = line.find(EVENT_PREFIX)
    if start < 0:
        return None
    try:
        body = json.loads(line[start + len(EVENT_PREFIX) :])
        if not isinstance(body, dict) or body.pop("v", None) != EVENTS_VERSION:
            return None
        seq, stamp, kind = int(body.pop("seq")), float(body.pop("t")), str(body.pop("kind"))
    except (KeyError, TypeError, ValueError):
        return None
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        return Unknown(seq=seq, time=stamp, name=kind, data=body)
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(seq=seq, time=stamp, **{k: v for k, v in body.items() if k in known})
    except TypeError:  # a required field is missing: a garbled line
        return None


def make_event(kind: str, **data: Any) -> RunEvent:
    """An event of ``kind`` from its fields (seq and time are set when it is sent)."""
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        return Unknown(name=kind, data=data)
    return cls(**data)


class EventSink(Protocol):
    """Where a worker sends its run's events; the backend decides how they travel."""

    def send(self, event: RunEvent) -> RunEvent:
        """Send ``event`` and return it as sent (with its ``seq`` and ``time``)."""
        ...


class EventWriter:
    """An ``EventSink`` that numbers events (1, 2, ...) and writes each as one complete line, thread-safe.

    Args:
        stream: where lines go (default: stdout, which a Ray job's log captures).
        start_seq: the last sequence number already used (a writer that continues a run).
        clock: the time source.
    """

    def __init__(
        self, stream: TextIO | None = None, *, start_seq: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        self.stream = stream or sys.stdout
        self.seq = start_seq
        self.clock = clock
        self._lock = threading.Lock()

    def send(self, event: RunEvent) -> RunEvent:
        with self._lock:
            self.seq += 1
            sent = dataclasses.replace(event, seq=self.seq, time=self.clock())
            self.stream.write(encode(sent) + "\n")
            self.stream.flush()
            return sent

    def emit(self, kind: str, **data: Any) -> RunEvent:
        """``send(make_event(kind, **data))``."""
        return self.send(make_event(kind, **data))


def digest(path: Path) -> str:
    """sha256 of a file, or of a folder's tree (sorted relative paths and file digests): what a
    ``Result`` event carries for each output, so the receiving side can verify the bytes it reads."""
    if path.is_dir():
        tree = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            tree.update(f"{item.relative_to(path).as_posix()}\0{digest(item)}\n".encode())
        return tree.hexdigest()
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def split_lines(text: str) -> tuple[list[str], str]:
    """The complete lines of a log chunk and the partial last line (to be read again, whole, later)."""
    *lines, rest = text.split("\n")
    return lines, rest


def apply_event(
    store: MetadataStore, event: RunEvent, *, run_id: str, artifacts: ArtifactStore | None = None
) -> bool:
    """Apply one event of run ``run_id`` to the store, unless the store holds it already; True if applied.

    For a stream of events use one ``compute.ingest.EventIngester`` (it remembers what it applied).
    """
    from .ingest import EventIngester  # the store side: a worker that only emits never imports it

    return EventIngester(store, run_id, artifacts=artifacts).apply([event]) == 1
