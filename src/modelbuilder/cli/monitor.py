"""Following a run in the terminal: rich progress bars on a TTY, plain lines otherwise.

The first Ctrl-C requests cancellation (the worker stops at its next safe point and keeps the best model
so far) and the output goes on until the run has ended; a second Ctrl-C kills the worker. Everything here
is drawn from the store (polled every half second), so it works the same for any backend.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .. import settings
from ..compute.backend import WorkerHandle
from ..entities import Run, RunStatus
from ..errors import InvalidStateError
from ..services import runs as run_service
from ..services.runs import ClosingErrorFilter, RunFollower, RunUpdate
from ..services.workspaces import WorkspaceSession
from ._common import message, stderr_console

_COUNT = re.compile(r"(\d+)/(\d+)\s*$")
_TRIAL_METRICS = ("val_accuracy", "accuracy")


class _Presses:
    """Counts Ctrl-C presses while installed (main thread only)."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.event.set()

    def wait(self, seconds: float) -> None:
        self.event.wait(seconds)
        self.event.clear()


@contextmanager
def _counting_interrupts() -> Iterator[_Presses]:
    presses = _Presses()
    if threading.current_thread() is not threading.main_thread():
        yield presses
        return
    previous = signal.signal(signal.SIGINT, presses)
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, previous)


def use_live_progress() -> bool:
    """Rich progress bars only on a terminal and unless MODELBUILDER_NO_PROGRESS=1."""
    return settings.progress_enabled() and sys.stderr.isatty()


def _trial_metric(run: Run) -> str:
    for key in _TRIAL_METRICS:
        if key in run.latest_metrics:
            return f"{key} {run.latest_metrics[key]:.4f}"
    return ""


class _PlainRenderer:
    def __init__(self) -> None:
        self._trial_status: dict[str, RunStatus] = {}

    def __enter__(self) -> _PlainRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def note(self, text: str) -> None:
        message(text)

    def render(self, update: RunUpdate) -> None:
        run = update.run
        for line in update.new_lines:
            message(f"  {line.text}")
        for child in update.children:
            if child.status.is_terminal and self._trial_status.get(child.id) is not child.status:
                name = child.name or child.id[:8]
                message(f"Trial {name}: {child.status.value} {_trial_metric(child)}".rstrip())
            self._trial_status[child.id] = child.status
        if update.status_changed:
            active = run.phase and not run.status.is_terminal
            message(f"Status: {run.status.value}" + (f" ({run.phase})" if active else ""))


class _LiveRenderer:
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._overall = self.progress.add_task("Queued", total=None)
        self._trials: dict[str, TaskID] = {}

    def __enter__(self) -> _LiveRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False)

    def render(self, update: RunUpdate) -> None:
        run = update.run
        for line in update.new_lines:
            self.progress.console.print(f"  {line.text}", markup=False, highlight=False)
        phase = run.phase or ""
        count = _COUNT.search(phase)
        description = f"{run.status.value}: {phase}" if phase else run.status.value
        if count:
            done, total = int(count.group(1)), int(count.group(2))
            self.progress.update(self._overall, description=description, completed=done, total=max(total, 1))
        else:
            self.progress.update(self._overall, description=description, total=None)
        for child in update.children:
            label = f"  {child.name or child.id[:8]}  {_trial_metric(child)}  {child.status.value}"
            if child.id not in self._trials:
                self._trials[child.id] = self.progress.add_task(label, total=1)
            finished = 1 if child.status.is_terminal else 0
            self.progress.update(self._trials[child.id], description=label, completed=finished)


def watch_run(
    session: WorkspaceSession, run_id: str, worker: WorkerHandle | None = None, *, live: bool | None = None
) -> tuple[Run, int]:
    """Show a run until it ends; returns the final run and how many times Ctrl-C was pressed."""
    follower = RunFollower(session, run_id, worker)
    # A failed run's error is raised by the caller (``train``): shown once, as Error/Hint, not also here.
    closing = ClosingErrorFilter()
    show_live = use_live_progress() if live is None else live
    renderer: _LiveRenderer | _PlainRenderer
    renderer = _LiveRenderer(stderr_console()) if show_live else _PlainRenderer()
    acted = 0
    with _counting_interrupts() as presses, renderer:
        while True:
            update = closing.apply(follower.step())
            renderer.render(update)
            if update.run.status.is_terminal:
                return update.run, presses.count
            if presses.count > acted:
                acted = presses.count
                _act_on_interrupt(session, run_id, follower.worker, acted, renderer)
                continue
            presses.wait(follower.interval)


def _act_on_interrupt(
    session: WorkspaceSession,
    run_id: str,
    worker: WorkerHandle | None,
    presses: int,
    renderer: _LiveRenderer | _PlainRenderer,
) -> None:
    if presses == 1:
        try:
            run_service.cancel_run(session, run_id)
        except InvalidStateError:
            return
        renderer.note(
            "Cancel requested: the run stops at its next safe point and keeps the best model so far. "
            "Press Ctrl-C again to kill it now."
        )
    else:
        run_service.kill_run(session, run_id, worker)
        renderer.note("Killed the worker; the run is Canceled.")
