"""The training job's entrypoint on the Ray cluster: ``python -m modelbuilder.compute.ray.entrypoint JOB``.

``JOB`` is the job description as base64 JSON (``RayJobSpec.to_argument``). The entrypoint runs the
trainer with an ``EventReporter`` that prints run events as lines (``compute.events``) instead of writing to
the workspace store, which the cluster cannot reach. It sends a heartbeat every ``HEARTBEAT_S`` seconds,
writes the outputs into a scratch folder on its node, publishes them for the submitter to fetch through
the dashboard (``transfer``) and ends with a ``result`` event that carries the sha256 of each output and
each published file's size and sha256, or an ``error`` event.

Cancel: ``ray job stop`` sends SIGTERM; the trainer then stops at its next safe point, keeps the best
model so far and the job still prints its (partial) result within ``RAY_JOB_STOP_WAIT_TIME_S``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..events import EventWriter, digest
from .jobspec import RayJobSpec

if TYPE_CHECKING:
    from ...training.config import TrainingResult

HEARTBEAT_S = float(os.environ.get("MODELBUILDER_RAY_HEARTBEAT_S", "10"))
#: Progress events at most this often per task (the last one of a task always goes out).
PROGRESS_INTERVAL_S = 1.0


class EventReporter:
    """A training ``Reporter`` that prints events; ``should_stop`` turns true on SIGTERM."""

    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer
        self.stop_requested = threading.Event()
        self._last_progress: dict[str, float] = {}

    def phase(self, name: str, message: str = "") -> None:
        self.writer.emit("phase", name=name, message=message)

    def progress(self, task: str, completed: int, total: int | None) -> None:
        now = time.monotonic()
        done = total is not None and completed >= total
        if not done and now - self._last_progress.get(task, 0.0) < PROGRESS_INTERVAL_S:
            return
        self._last_progress[task] = now
        self.writer.emit("progress", task=task, completed=completed, total=total)

    def metric(self, key: str, value: float, step: int = 0, trial: str | None = None) -> None:
        self.writer.emit("metric", key=key, value=float(value), step=int(step), trial=trial)

    def log(self, line: str) -> None:
        self.writer.emit("log", line=line)

    def trial_started(self, trial: str, params: dict[str, Any]) -> None:
        self.writer.emit("trial_started", trial=trial, params=params)

    def trial_ended(self, trial: str, status: str, metrics: dict[str, float]) -> None:
        self.writer.emit("trial_ended", trial=trial, status=status, metrics=metrics)

    def artifact(self, path: Path, name: str) -> None:
        # Outputs travel once, with their digests, in the final result event.
        pass

    def should_stop(self) -> bool:
        return self.stop_requested.is_set()


def emit_result(
    writer: EventWriter, run_id: str, result: TrainingResult, output_dir: Path, *, owned: bool
) -> None:
    """Publish the outputs (``transfer.publish_outputs``) and send the ``result`` event; the scratch
    output folder is removed when ``owned`` (the published links keep the bytes)."""
    from ..outputs import result_to_dict
    from .transfer import publish_outputs

    digests = {name: digest(path) for name, path in sorted(result.files.items())}
    transfer = publish_outputs(run_id, result.files)
    writer.emit(
        "result",
        result=result_to_dict(result),
        output_dir=str(output_dir),
        sha256=digests,
        files={name: str(path) for name, path in result.files.items()},
        transfer=transfer.to_dict(),
    )
    if owned:
        shutil.rmtree(output_dir, ignore_errors=True)


def _heartbeats(writer: EventWriter, done: threading.Event) -> None:
    while not done.wait(HEARTBEAT_S):
        writer.emit("heartbeat")


def run(spec: RayJobSpec, writer: EventWriter) -> int:
    """Run the trainer of ``spec``; 0 when it produced a result (complete or canceled), else 1."""
    from ...errors import ModelBuilderError
    from ...training.config import TrainingConfig
    from ..worker import load_target

    reporter = EventReporter(writer)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        reporter.stop_requested.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    done = threading.Event()
    threading.Thread(target=_heartbeats, args=(writer, done), name="mb-heartbeat", daemon=True).start()
    writer.emit("started", pid=os.getpid(), host=os.uname().nodename, cwd=os.getcwd())
    try:
        config_data = dict(spec.config)
        if not config_data.get("data"):
            config_data["data"] = os.getcwd()  # the data folder was uploaded as the working directory
        config = TrainingConfig.from_dict(config_data)
        # A scratch folder on this node unless the submitter named one: the outputs travel back through
        # the dashboard (transfer.py), never through a path both sides must see.
        owned = not spec.output_dir
        output_dir = Path(spec.output_dir or tempfile.mkdtemp(prefix=f"mb-output-{spec.run_id}-"))
        output_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_dir = Path(spec.checkpoint_dir) if spec.checkpoint_dir else None
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if spec.worker_plan.data_parallel:
            from .train_workers import run_workers

            try:
                run_workers(spec, reporter, output_dir, owned=owned)  # rank 0 sends the result itself
            finally:
                if owned:
                    shutil.rmtree(output_dir, ignore_errors=True)
            return 0
        trainer = load_target(spec.target)
        result = trainer(config, reporter, output_dir, checkpoint_dir=checkpoint_dir)
        emit_result(writer, spec.run_id, result, output_dir, owned=owned)
        return 0
    except BaseException as exc:  # the job's last word: how it failed
        hint = exc.hint if isinstance(exc, ModelBuilderError) else None
        message = exc.message if isinstance(exc, ModelBuilderError) else str(exc) or type(exc).__name__
        if not isinstance(exc, ModelBuilderError):
            writer.emit("log", line=traceback.format_exc().rstrip())
        writer.emit("error", type=type(exc).__name__, message=message, hint=hint)
        return 1
    finally:
        done.set()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m modelbuilder.compute.ray.entrypoint JOB\n")
        return 2
    return run(RayJobSpec.from_argument(args[0]), EventWriter())


if __name__ == "__main__":
    sys.exit(main())
