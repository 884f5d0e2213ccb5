"""How training tells the outside world what happens, without knowing about stores or terminals.

Training code calls a ``Reporter``; the compute backend decides where the events go (the workspace
store, a queue to the parent process, a Ray actor). Torch-free on purpose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Reporter(Protocol):
    """Callback interface used by the trainer. Implementations must be cheap and never raise."""

    def phase(self, name: str, message: str = "") -> None:
        """A new phase started: scanning, features, trial, export, ..."""

    def progress(self, task: str, completed: int, total: int | None) -> None:
        """Progress of the current phase (``total`` None when unknown)."""

    def metric(self, key: str, value: float, step: int = 0, trial: str | None = None) -> None:
        """A metric value; ``trial`` names the child run it belongs to (None: the parent run)."""

    def log(self, line: str) -> None:
        """One human-readable log line."""

    def trial_started(self, trial: str, params: dict[str, Any]) -> None:
        """A trial (child run) started with these parameters."""

    def trial_ended(self, trial: str, status: str, metrics: dict[str, float]) -> None:
        """A trial ended: status is Completed, Failed or Canceled."""

    def artifact(self, path: Path, name: str) -> None:
        """A finished, verified output file is available at ``path`` under ``name``."""

    def should_stop(self) -> bool:
        """True once cancellation was requested: stop at the next safe point, keep the best so far."""
        ...


@dataclass
class RecordingReporter:
    """Keeps every event in memory; used in-process and in tests."""

    events: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    stop_requested: bool = False
    echo: bool = False

    def _add(self, kind: str, *args: Any) -> None:
        self.events.append((kind, args))

    def phase(self, name: str, message: str = "") -> None:
        self._add("phase", name, message)

    def progress(self, task: str, completed: int, total: int | None) -> None:
        self._add("progress", task, completed, total)

    def metric(self, key: str, value: float, step: int = 0, trial: str | None = None) -> None:
        self._add("metric", key, float(value), step, trial)

    def log(self, line: str) -> None:
        self._add("log", time.time(), line)
        if self.echo:
            print(line)

    def trial_started(self, trial: str, params: dict[str, Any]) -> None:
        self._add("trial_started", trial, params)

    def trial_ended(self, trial: str, status: str, metrics: dict[str, float]) -> None:
        self._add("trial_ended", trial, status, metrics)

    def artifact(self, path: Path, name: str) -> None:
        self._add("artifact", path, name)

    def should_stop(self) -> bool:
        return self.stop_requested

    def of_kind(self, kind: str) -> list[tuple[Any, ...]]:
        return [args for k, args in self.events if k == kind]
