"""The compute backend interface: start a training job somewhere, and tell whether its worker lives.

A backend only *executes*: the worker it starts opens the workspace store itself and carries the
trainer's reporter events there, so the caller (CLI, Python API, portal) follows a run by reading the
store, whatever the backend. Provisioning (can a backend ever satisfy a size?) is separate, in
``provisioning.py``; a backend registers both under the same name.

Contract for every implementation (``tests/compute/test_local_backend.py`` checks the local one):

- ``start(job)`` returns once the worker was launched; the run is ``Queued`` and the worker moves it on;
- ``find_worker(job)`` answers from any process: None when no worker was ever recorded for the run;
- ``WorkerHandle.poll()`` is None while the worker lives, else its exit code (``LOST_EXIT_CODE`` when the
  code is unknowable, e.g. the process vanished without being our child);
- ``WorkerHandle.kill()`` stops the worker and everything it started, at once (no cleanup).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ..errors import InvalidParameterError
from .job import TrainingJob

#: ``poll()`` of a worker that is gone but whose exit status nobody can know.
LOST_EXIT_CODE = -255


class WorkerHandle(ABC):
    """A started (or recorded) worker of one run."""

    run_id: str

    @abstractmethod
    def poll(self) -> int | None:
        """None while the worker lives; else its exit code (negative: killed by that signal)."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the worker to end; its exit code, or None if still alive."""

    @abstractmethod
    def kill(self) -> None:
        """Kill the worker and its child processes now (SIGKILL); nothing if it already ended."""

    @abstractmethod
    def describe(self) -> str:
        """Who the worker is, for messages: 'worker pid 1234 on host-a'."""

    def describe_exit(self) -> str:
        """How the worker ended, for a run's error: 'worker pid 12 was killed by SIGKILL'."""
        code = self.poll()
        if code is None:
            return f"{self.describe()} is still running"
        if code == LOST_EXIT_CODE:
            return f"{self.describe()} is gone"
        if code < 0:
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"{self.describe()} was killed by {name}"
        return f"{self.describe()} exited with code {code}"


class ComputeBackend(ABC):
    """Runs training jobs on one kind of compute."""

    #: The backend name, as in ``Compute.backend`` and ``--backend``.
    name: str = ""

    @abstractmethod
    def start(self, job: TrainingJob) -> WorkerHandle:
        """Launch the worker of ``job`` and return its handle (the worker runs on after we return).

        Raises:
            ComputeError: the worker could not be started.
        """

    @abstractmethod
    def find_worker(self, job: TrainingJob) -> WorkerHandle | None:
        """The worker recorded for ``job``'s run (from any process), or None if none was recorded."""


_BACKENDS: dict[str, Callable[[], ComputeBackend]] = {}


def register_compute_backend(name: str, factory: Callable[[], ComputeBackend]) -> None:
    """Make ``get_compute_backend(name)`` return ``factory()`` (a later registration replaces it)."""
    _BACKENDS[name] = factory


def get_compute_backend(name: str) -> ComputeBackend:
    """The execution backend for computes of backend ``name``.

    Raises:
        InvalidParameterError: no backend of that name is registered.
    """
    if name not in _BACKENDS:
        known = ", ".join(sorted(_BACKENDS)) or "none"
        raise InvalidParameterError(
            f"No compute backend named {name!r} can run training here (known: {known}).",
            hint='The ray backend needs its extra: pip install "modelbuilder[ray]"'
            if name == "ray"
            else "Use a compute of a known backend, e.g. --compute local.",
        )
    return _BACKENDS[name]()
