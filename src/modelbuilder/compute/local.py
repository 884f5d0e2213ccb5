"""The local backend: each run's trainer in its own process on this machine.

The worker is ``python -m modelbuilder.compute.worker <job.json>`` in a new session (its own process
group), so a Ctrl-C in the terminal reaches only the CLI, which turns it into a cancel request; a second
Ctrl-C kills the whole group. The worker's pid and start time are recorded next to the job, so any process
(``modelbuilder run cancel`` in another terminal, the stale-run reaper) can tell whether it still lives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import psutil

from ..errors import ComputeError
from .backend import (
    ClusterResources,
    ComputeBackend,
    Fit,
    NodeInfo,
    WorkerHandle,
    WorkerState,
    WorkerStatus,
    register_backend,
)
from .job import RunFolders, TrainingJob, WorkerRecord
from .provisioning import MachineCapacity, check_local_fit
from .spec import LOCAL_BACKEND, ComputeSpec

logger = logging.getLogger(__name__)

WORKER_MODULE = "modelbuilder.compute.worker"
#: Two start times of one process read through different APIs differ by rounding only.
_CREATE_TIME_TOLERANCE_S = 1.0
#: How long kill() waits for the killed worker to be gone.
KILL_WAIT_S = 30.0


def _process_matches(record: WorkerRecord) -> psutil.Process | None:
    """The live process of ``record`` (not a dead zombie, same start time), or None."""
    try:
        process = psutil.Process(record.pid)
        # A zombie leader with live threads is still exiting: after SIGKILL the main thread can end
        # first while the others (a reporter thread in disk I/O) take a while, and until they end the
        # parent's waitpid does not see it gone either. Gone means the last thread ended.
        if process.status() == psutil.STATUS_ZOMBIE and process.num_threads() <= 1:
            return None
        if record.create_time and abs(process.create_time() - record.create_time) > _CREATE_TIME_TOLERANCE_S:
            return None  # the pid was recycled by another process
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class LocalWorkerHandle(WorkerHandle):
    """A local worker: our own child (``Popen``) or one recorded by another process."""

    def __init__(self, record: WorkerRecord, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.run_id = record.run_id
        self.record = record
        self._popen = popen
        self._killed = False

    @property
    def pid(self) -> int:
        return self.record.pid

    def describe(self) -> str:
        return f"worker pid {self.record.pid} on {self.record.host}"

    def status(self) -> WorkerStatus:
        if self._popen is not None:
            return self._exit_status(self._popen.poll())
        if not self.record.on_this_host:
            # Another machine's process cannot be seen from here; its heartbeats decide.
            return WorkerStatus(
                WorkerState.RUNNING, f"{self.describe()} (not visible from this host)", known=False
            )
        if _process_matches(self.record) is not None:
            return WorkerStatus(WorkerState.RUNNING, f"{self.describe()} is running")
        return WorkerStatus(WorkerState.LOST, f"{self.describe()} is gone")

    def _exit_status(self, code: int | None) -> WorkerStatus:
        who = self.describe()
        if code is None:
            return WorkerStatus(WorkerState.RUNNING, f"{who} is running")
        if code == 0:
            return WorkerStatus(WorkerState.SUCCEEDED, f"{who} exited normally")
        if code > 0:
            return WorkerStatus(WorkerState.FAILED, f"{who} exited with code {code}")
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        state = WorkerState.STOPPED if self._killed else WorkerState.FAILED
        return WorkerStatus(state, f"{who} was killed by {name}")

    def wait(self, timeout: float | None = None) -> WorkerStatus:
        if self._popen is None:
            return super().wait(timeout)
        try:
            return self._exit_status(self._popen.wait(timeout))
        except subprocess.TimeoutExpired:
            return self.status()

    def kill(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            return
        if self._popen is None and (not self.record.on_this_host or _process_matches(self.record) is None):
            return
        self._killed = True
        # The worker leads its own process group: kill it and whatever it started (data loaders).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.record.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.record.pid, signal.SIGKILL)
        # SIGKILL is certain but not instant: a process in uninterruptible I/O (a busy disk) dies when that
        # I/O returns. Callers rely on the worker being gone when kill() returns.
        self.wait(KILL_WAIT_S)


class LocalBackend(ComputeBackend):
    """Runs each job in a child process of this machine; a size fits when this machine has what it asks.

    Args:
        python: the interpreter for workers (default: this one).
        capacity: the machine to compare sizes with (default: this machine, detected once).
    """

    name: ClassVar[str] = LOCAL_BACKEND
    max_nodes: ClassVar[int | None] = 1
    accepts_local_size: ClassVar[bool] = True
    uses_address: ClassVar[bool] = False

    def __init__(self, python: str | None = None, capacity: MachineCapacity | None = None) -> None:
        self.python = python or sys.executable
        self.capacity = capacity

    def check(self, spec: ComputeSpec) -> Fit:
        reason = check_local_fit(spec.size, self.capacity or MachineCapacity.detect())
        return Fit.ok() if reason is None else Fit.unfit(reason)

    def describe_resources(self, spec: ComputeSpec) -> ClusterResources:
        """This machine: its cores, memory (total and free now) and GPUs."""
        capacity = self.capacity or MachineCapacity.detect()
        node = NodeInfo(
            address=socket.gethostname(),
            cpus=float(capacity.cores),
            gpus=float(capacity.gpus),
            memory_gib=capacity.memory_gib,
            memory_available_gib=psutil.virtual_memory().available / 2**30,
            gpu_names=capacity.gpu_names,
        )
        return ClusterResources(nodes=(node,))

    def start(self, job: TrainingJob, spec: ComputeSpec) -> LocalWorkerHandle:
        folders = RunFolders.of_job(job)
        running = self.find(job, spec)
        if running is not None and not running.status().is_final:
            return running  # submitted twice: one worker per run
        folders.state_dir.mkdir(parents=True, exist_ok=True)
        job_path = job.save(folders.job_path)  # the worker's own input; nobody else needs it
        command = [self.python, "-m", WORKER_MODULE, str(job_path)]
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            with open(folders.output_path, "ab") as output:
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    close_fds=True,
                )
        except OSError as exc:
            raise ComputeError(
                f"The local worker of run '{job.run_id}' could not be started: {exc}.",
                hint=f"Check that {self.python} can run: {' '.join(command)}",
            ) from exc
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            create_time = 0.0  # already gone: the Popen reports how it ended
        record = WorkerRecord(job.run_id, popen.pid, create_time=create_time, backend=self.name)
        record.save(folders.worker_path)
        logger.info("Started worker pid %d for run %s", popen.pid, job.run_id)
        return LocalWorkerHandle(record, popen)

    def find(self, job: TrainingJob, spec: ComputeSpec) -> LocalWorkerHandle | None:
        return self.find_worker_in(RunFolders.of_job(job).state_dir)

    @staticmethod
    def find_worker_in(state_dir: Path) -> LocalWorkerHandle | None:
        """The worker recorded in a run's worker folder, or None."""
        record = WorkerRecord.find(state_dir / "worker.json")
        return None if record is None else LocalWorkerHandle(record)


register_backend(LocalBackend.name, LocalBackend)
