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
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ..errors import ComputeError
from .backend import LOST_EXIT_CODE, ComputeBackend, WorkerHandle, register_compute_backend
from .job import TrainingJob, WorkerRecord

logger = logging.getLogger(__name__)

WORKER_MODULE = "modelbuilder.compute.worker"
#: Two start times of one process read through different APIs differ by rounding only.
_CREATE_TIME_TOLERANCE_S = 1.0


def _process_matches(record: WorkerRecord) -> psutil.Process | None:
    """The live process of ``record`` (not a zombie, same start time), or None."""
    try:
        process = psutil.Process(record.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
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

    @property
    def pid(self) -> int:
        return self.record.pid

    def describe(self) -> str:
        return f"worker pid {self.record.pid} on {self.record.host}"

    def poll(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        if not self.record.on_this_host:
            return None  # cannot see it from here; heartbeats decide
        return None if _process_matches(self.record) is not None else LOST_EXIT_CODE

    def wait(self, timeout: float | None = None) -> int | None:
        if self._popen is not None:
            try:
                return self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        return code

    def kill(self) -> None:
        if self._popen is not None and self._popen.poll() is not None:
            return
        if self._popen is None and (not self.record.on_this_host or _process_matches(self.record) is None):
            return
        # The worker leads its own process group: kill it and whatever it started (data loaders).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.record.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.record.pid, signal.SIGKILL)
        self.wait(5.0)


class LocalBackend(ComputeBackend):
    """Runs each job in a child process of this machine.

    Args:
        python: the interpreter for workers (default: this one).
    """

    name = "local"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def start(self, job: TrainingJob) -> LocalWorkerHandle:
        state_dir = Path(job.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        job_path = job.save(state_dir / "job.json")
        command = [self.python, "-m", WORKER_MODULE, str(job_path)]
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            with open(state_dir / "worker.out", "ab") as output:
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
            create_time = 0.0  # already gone: poll() of the Popen reports it
        record = WorkerRecord(job.run_id, popen.pid, create_time=create_time, backend=self.name)
        record.save(state_dir / "worker.json")
        logger.info("Started worker pid %d for run %s", popen.pid, job.run_id)
        return LocalWorkerHandle(record, popen)

    def find_worker(self, job: TrainingJob) -> LocalWorkerHandle | None:
        return self.find_worker_in(Path(job.state_dir))

    @staticmethod
    def find_worker_in(state_dir: Path) -> LocalWorkerHandle | None:
        """The worker recorded in a run's worker folder, or None."""
        record = WorkerRecord.find(state_dir / "worker.json")
        return None if record is None else LocalWorkerHandle(record)


register_compute_backend(LocalBackend.name, LocalBackend)
