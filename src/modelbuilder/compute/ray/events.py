"""Run events as lines in a Ray job's log: the job prints them, the submitting side parses them.

The cluster never gets the workspace store's credentials. The job prints one line per event::

    @mb-event {"v": 1, "seq": 17, "t": 1796061657.6, "kind": "metric", "key": "val_accuracy", ...}

``seq`` counts from 1 in each job attempt, so lines are unique (Ray's log deduplication never folds
two of them; the job also runs with ``RAY_DEDUP_LOGS=0``) and the reader applies each event exactly once
by remembering the last ``seq`` it applied. Anything else in the log (Ray's own lines, tracebacks) is
not an event and is kept as a plain log line by the reader.

Kinds: ``phase``, ``progress``, ``metric``, ``log``, ``trial_started``, ``trial_ended``, ``heartbeat``,
``result`` (the TrainingResult as ``result_to_dict`` plus each output's sha256), ``error`` (how the
job failed: type, message, hint).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

EVENT_PREFIX = "@mb-event "
EVENTS_VERSION = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Event:
    """One parsed event line."""

    seq: int
    time: float
    kind: str
    data: dict[str, Any]


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf; a diverged loss is still worth showing, as a string.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class EventWriter:
    """Prints event lines to a stream (the job's stdout), one complete line per write, thread-safe."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._seq = 0
        self._lock = threading.Lock()

    def emit(self, kind: str, **data: Any) -> None:
        with self._lock:
            self._seq += 1
            body = {"v": EVENTS_VERSION, "seq": self._seq, "t": time.time(), "kind": kind}
            body.update({key: _finite(value) for key, value in data.items()})
            self.stream.write(EVENT_PREFIX + json.dumps(body, default=str) + "\n")
            self.stream.flush()


def parse_event(line: str) -> Event | None:
    """The event on ``line``, or None when the line is not an event (or is garbled)."""
    start = line.find(EVENT_PREFIX)
    if start < 0:
        return None
    try:
        body = json.loads(line[start + len(EVENT_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("v") != EVENTS_VERSION:
        return None
    try:
        seq, stamp, kind = int(body.pop("seq")), float(body.pop("t")), str(body.pop("kind"))
    except (KeyError, TypeError, ValueError):
        return None
    body.pop("v")
    return Event(seq=seq, time=stamp, kind=kind, data=body)


def split_log(text: str) -> Iterator[tuple[Event | None, str]]:
    """(event or None, line) for each complete line of a job log (a trailing partial line is left out:
    it is read again, whole, next time)."""
    lines = text.split("\n")
    for line in lines[:-1]:
        yield parse_event(line), line


def digest(path: Path) -> str:
    """sha256 of a file, or of a folder's tree (sorted relative paths and file digests)."""
    if path.is_dir():
        tree = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            tree.update(f"{item.relative_to(path).as_posix()}\0{digest(item)}\n".encode())
        return tree.hexdigest()
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
