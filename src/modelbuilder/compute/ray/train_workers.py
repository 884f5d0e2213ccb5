"""Data-parallel training inside a Ray job: the trainer in a Ray Train ``TorchTrainer`` worker group.

When a size asks for several workers (``WorkerPlan``: one per GPU with NCCL, or a CPU size's worker
count with gloo), the job's entrypoint does not train itself. It starts ``workers`` Ray Train workers,
packed onto one node (``STRICT_PACK``, as on one VM), restarted up to ``MAX_WORKER_FAILURES`` times
when one dies (the trainer resumes from its finished trials). Every worker runs the same trainer with
a ``DataParallelStrategy`` and its ``DistributedContext``; rank 0 is the run (plan, features, export,
outputs, events), the others only take the gradient steps.

Rank 0's events reach the job's log through a small actor (``EventBridge``) that the entrypoint drains
and prints: a worker's own stdout would arrive prefixed by Ray and interleaved with the other ranks'.
The same actor carries a cancel (``ray job stop`` signals only the entrypoint) to rank 0, whose
``should_stop`` every rank then follows at its next step.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ...errors import ComputeError
from ..events import EventWriter, RunEvent
from .entrypoint import EventReporter, emit_result
from .jobspec import RayJobSpec

#: Worker-group restarts Ray Train allows before the run fails (a killed worker is one failure).
MAX_FAILURES_ENV = "MODELBUILDER_RAY_MAX_WORKER_FAILURES"
MAX_WORKER_FAILURES = int(os.environ.get(MAX_FAILURES_ENV, "2"))
#: How much of a failed worker group's report reaches the run's log, and of its cause the run's error.
_DETAIL_CHARS = 8000
_CAUSE_CHARS = 400
#: Seconds the workers may wait to be placed before the run fails with the reason (a job whose entrypoint
#: asks for nothing starts at once; its workers must not wait for resources forever).
PLACEMENT_TIMEOUT_S = os.environ.get("MODELBUILDER_RAY_PLACEMENT_TIMEOUT_S", "45")
#: How often the entrypoint prints what rank 0 sent, and rank 0 asks whether to stop.
PUMP_INTERVAL_S = 0.2
STOP_POLL_S = 0.5


class WorkerGroupError(ComputeError):
    """The training worker group failed (more often than ``MAX_WORKER_FAILURES``)."""


class EventBridge:
    """An actor between rank 0 and the entrypoint: events one way, the cancel and rank 0's error the other."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.stop = False
        self.error: dict[str, Any] | None = None
        self.attempts = 0

    def attempt(self) -> int:
        """Rank 0 starts: 1, then 2, ... after each restart of the worker group."""
        self.attempts += 1
        return self.attempts

    def attempts_made(self) -> int:
        return self.attempts

    def push(self, event: RunEvent) -> None:
        self.events.append(event)

    def drain(self) -> list[RunEvent]:
        events, self.events = self.events, []
        return events

    def request_stop(self) -> None:
        self.stop = True

    def stop_requested(self) -> bool:
        return self.stop

    def set_error(self, error: dict[str, Any]) -> None:
        self.error = error

    def last_error(self) -> dict[str, Any] | None:
        return self.error


class BridgeWriter(EventWriter):
    """An ``EventWriter`` that sends each event to the bridge; the entrypoint's writer numbers and prints
    it (one sequence for the job, whichever process made the event)."""

    def __init__(self, bridge: Any) -> None:
        super().__init__()
        self.bridge = bridge

    def send(self, event: RunEvent) -> RunEvent:
        # One caller's calls to an actor run in order: the entrypoint prints them as rank 0 sent them.
        self.bridge.push.remote(event)
        return event


class BridgeReporter(EventReporter):
    """Rank 0's reporter: events to the bridge, ``should_stop`` from the bridge (asked at most every
    ``STOP_POLL_S``: the loop asks at every step)."""

    def __init__(self, bridge: Any) -> None:
        super().__init__(BridgeWriter(bridge))
        self.bridge = bridge
        self._asked = 0.0

    def should_stop(self) -> bool:
        import ray

        now = time.monotonic()
        if not self.stop_requested.is_set() and now - self._asked >= STOP_POLL_S:
            self._asked = now
            if ray.get(self.bridge.stop_requested.remote()):
                self.stop_requested.set()
        return self.stop_requested.is_set()


def accepts_workers(trainer: Any) -> bool:
    """Whether a trainer function can run as a data-parallel worker (takes ``distributed``)."""
    try:
        return "distributed" in inspect.signature(trainer).parameters
    except (TypeError, ValueError):
        return False


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the trainer with this worker's strategy, rank and reporter."""
    import ray
    import ray.train.torch

    from ...errors import ModelBuilderError
    from ...training.config import TrainingConfig
    from ...training.devices import CPUStrategy, CUDAStrategy, DataParallelStrategy, DeviceStrategy
    from ...training.distributed import DistributedContext, SilentReporter
    from ..worker import load_target

    spec = RayJobSpec.from_argument(loop_config["spec"])
    bridge = loop_config["bridge"]
    distributed = DistributedContext.from_process_group()
    inner: DeviceStrategy = CPUStrategy()
    if spec.use_gpu:
        inner = CUDAStrategy(ray.train.torch.get_device().index or 0)
    strategy = DataParallelStrategy(inner)
    config_data = dict(spec.config)
    if not config_data.get("data"):
        config_data["data"] = os.getcwd()  # uploaded data: every worker's working directory holds it
    config = TrainingConfig.from_dict(config_data)
    trainer = load_target(spec.target)
    threads = max(1, int(spec.cpus_per_worker))
    if not distributed.is_main:
        scratch = Path(tempfile.mkdtemp(prefix=f"mb-rank{distributed.rank}-"))
        try:
            trainer(config, SilentReporter(), scratch, strategy=strategy, distributed=distributed,
                    threads=threads)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    reporter = BridgeReporter(bridge)
    output_dir = Path(loop_config["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)  # rank 0 may run on another node than the entrypoint
    checkpoint_dir = Path(spec.checkpoint_dir) if spec.checkpoint_dir else None
    attempt = ray.get(bridge.attempt.remote())
    if attempt > 1:
        reporter.log(f"data-parallel: the worker group restarted after a worker failed (attempt {attempt} "
                     f"of {MAX_WORKER_FAILURES + 1}); resuming from the finished trials")
        reporter.metric("worker_group_restarts", attempt - 1)
    reporter.log(f"data-parallel: rank 0 of {distributed.world_size} workers ({strategy.inner.name})")
    try:
        result = trainer(config, reporter, output_dir, checkpoint_dir=checkpoint_dir, strategy=strategy,
                         distributed=distributed, threads=threads)
    except ModelBuilderError as exc:
        bridge.set_error.remote({"type": type(exc).__name__, "message": exc.message, "hint": exc.hint})
        raise
    # Published on rank 0's node, which may not be the entrypoint's: the follower fetches from there.
    emit_result(reporter.writer, spec.run_id, result, output_dir, owned=bool(loop_config.get("owned")))


def run_workers(
    spec: RayJobSpec, reporter: EventReporter, output_dir: Path, *, owned: bool = False
) -> None:
    """Train ``spec`` in a worker group; rank 0's events (its ``result`` included) are printed here.

    Raises:
        ComputeError: the trainer cannot train data-parallel.
        WorkerGroupError: the worker group failed beyond its restarts (with rank 0's error when it
            raised one).
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..worker import load_target

    if not accepts_workers(load_target(spec.target)):
        raise ComputeError(
            f"The trainer {spec.target} cannot train on {spec.workers} workers (it takes no "
            "'distributed' argument).",
            hint="Use a compute with one worker (max nodes 1, or a one-GPU size) for this trainer.",
        )
    # Read by Ray Train's controller, which inherits the entrypoint's environment.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", PLACEMENT_TIMEOUT_S)
    ray.init(ignore_reinit_error=True, log_to_driver=False)
    bridge: Any = ray.remote(num_cpus=0)(EventBridge).remote()
    per_worker = {"CPU": spec.cpus_per_worker, **({"GPU": 1.0} if spec.use_gpu else {})}
    reporter.log(f"data-parallel: {spec.workers} workers with {per_worker} each, packed on one node "
                 f"({'NCCL' if spec.use_gpu else 'gloo'})")
    # Ray Train's own run state (the trainer keeps its checkpoints itself): removed when the group ends.
    storage = output_dir.parent / f".ray-train-{spec.run_id}"
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec.to_argument(), "bridge": bridge, "output_dir": str(output_dir),
                           "owned": owned},
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.use_gpu,
                                     resources_per_worker=per_worker, placement_strategy="STRICT_PACK"),
        run_config=RunConfig(name=f"mb-{spec.run_id}",
                             storage_path=str(storage),
                             # A group that cannot be placed fails at once (no endless retries).
                             failure_config=FailureConfig(  # type: ignore[call-arg]  # Train V2 (the default)
                                 max_failures=MAX_WORKER_FAILURES,
                                 controller_failure_limit=0)),
    )
    done = threading.Event()
    pump = threading.Thread(target=_pump, args=(bridge, reporter, done), name="mb-bridge", daemon=True)
    pump.start()
    try:
        trainer.fit()
    except Exception as exc:
        error: dict[str, Any] | None = ray.get(bridge.last_error.remote())
        if error:
            raise WorkerGroupError(str(error["message"]), hint=error.get("hint")) from exc
        if _placement_timed_out(exc):
            raise WorkerGroupError(
                f"The {spec.workers} training workers ({per_worker} each, on one node) could not be placed "
                f"within {PLACEMENT_TIMEOUT_S}s: {exc}",
                hint="Free the cluster's resources, or use a smaller size or fewer nodes.",
            ) from exc
        # The whole report (every rank's traceback) goes to the run's log; the error names the cause.
        reporter.log(f"data-parallel: the worker group failed:\n{str(exc)[-_DETAIL_CHARS:]}")
        restarts = max(0, int(ray.get(bridge.attempts_made.remote())) - 1)
        raise WorkerGroupError(
            f"The {spec.workers} training workers failed after {restarts} restart(s) of the worker group "
            f"(at most {MAX_WORKER_FAILURES} allowed): {worker_failure_cause(exc)}",
            hint="See the run's log for the workers' tracebacks. If workers die from lack of memory, use "
            f"a larger size; to allow more restarts, set {MAX_FAILURES_ENV} where the cluster runs jobs.",
        ) from exc
    finally:
        done.set()
        pump.join()
        _forward(bridge, reporter)  # what rank 0 sent last
        shutil.rmtree(storage, ignore_errors=True)


def worker_failure_cause(exc: BaseException) -> str:
    """The first failed worker's error in one line (Ray Train's ``WorkerGroupError`` holds each rank's
    exception in ``worker_failures``; anything else: its own first line), without tracebacks."""
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        rank, error = min(failures.items(), key=lambda item: item[0])
        cause = f"rank {rank}: {type(error).__name__}: {_first_line(str(error))}"
    else:
        cause = f"{type(exc).__name__}: {_first_line(str(exc))}"
    return cause if len(cause) <= _CAUSE_CHARS else cause[: _CAUSE_CHARS - 3] + "..."


def _first_line(text: str) -> str:
    # Ray prefixes messages with a header line ("Training failed due to worker errors:"), then the text.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.endswith(":") and not line.startswith("Traceback")]
    return (useful or lines or [""])[0]


def _placement_timed_out(exc: Exception) -> bool:
    """Whether Ray Train gave up waiting for the workers' resources (its ``ControllerError`` carries a
    ``WorkerGroupStartupTimeoutError``; matched by name: Ray Train's error classes are internal)."""
    failure = getattr(exc, "controller_failure", None)
    return type(failure).__name__ == "WorkerGroupStartupTimeoutError" or \
        "WORKER_GROUP_START_TIMEOUT_S" in str(exc)


def _forward(bridge: Any, reporter: EventReporter) -> None:
    import ray

    for event in ray.get(bridge.drain.remote()):
        reporter.writer.send(event)


def _pump(bridge: Any, reporter: EventReporter, done: threading.Event) -> None:
    stop_sent = False
    while not done.wait(PUMP_INTERVAL_S):
        if reporter.stop_requested.is_set() and not stop_sent:
            bridge.request_stop.remote()
            stop_sent = True
        _forward(bridge, reporter)
