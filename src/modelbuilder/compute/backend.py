"""The compute backend seam: one plugin object per backend, registered in one registry.

A backend plugin carries both halves of what a kind of compute does:

- *provisioning*: ``validate(spec)`` (backend rules on a ``ComputeSpec``: nodes, address, the ``local``
  size), ``check(spec) -> Fit`` (can it ever give the size what it asks for?) and ``teardown(spec)``;
- *execution*: ``start(job, spec) -> WorkerHandle`` and ``find(job, spec) -> WorkerHandle | None``.

A ``WorkerHandle`` reports a ``WorkerStatus``: a ``WorkerState`` (not a POSIX exit code: a Ray job has
none) and a detail string for messages. How the run's events (status, metrics, logs, heartbeats,
artifacts, the final result) reach the workspace store is the backend's choice: the local worker writes
to the store itself; a remote one ships ``compute.events`` lines that the submitting side applies
(``compute.ingest``).

Contract for every implementation (``tests/contracts/test_compute_backend.py`` runs it on each):

- ``start(job, spec)`` returns once the worker was launched (the run is ``Queued``; the worker, or the
  events it sends, move it on); starting a job whose worker already exists does not start a second one;
- ``find(job, spec)`` answers from any process for a job rebuilt from the run
  (``services.training_run.job_for_run``; no job file needed): None when no worker was started for it;
- ``WorkerHandle.status()`` is ``PENDING``/``RUNNING`` while the worker lives, else how it ended;
- ``WorkerHandle.cancel()`` asks the worker to stop at its next safe point and keep the best model so far
  (a no-op where the worker learns it from the store); ``kill()`` stops it and all it started, at once.

Plugins register with ``register_backend(name, factory)``. The built-in ones are imported on first use
(``local`` always; ``ray`` when its extra is installed), so asking for ``ray`` without the extra is a
clear error with the install command.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from ..errors import InvalidParameterError, MissingDependencyError

if TYPE_CHECKING:
    from .job import TrainingJob
    from .spec import ComputeSpec

RAY_INSTALL_HINT = 'Install the ray backend with: pip install "modelbuilder[ray]"'
_WAIT_POLL_S = 0.1


class WorkerState(str, Enum):
    """Where a run's worker is, as its backend sees it."""

    #: Accepted, waiting for resources (a Ray job that is PENDING).
    PENDING = "Pending"
    RUNNING = "Running"
    #: Ended on its own terms (the run's outcome, Completed/Canceled/Failed, is in the store).
    SUCCEEDED = "Succeeded"
    #: Ended with an error (non-zero exit, killed by a signal, a Ray job FAILED).
    FAILED = "Failed"
    #: Stopped on request (``kill()``, a Ray job STOPPED).
    STOPPED = "Stopped"
    #: Gone without a trace: nobody can tell how it ended (a recorded process that vanished, a Ray job the
    #: cluster no longer knows).
    LOST = "Lost"

    @property
    def is_final(self) -> bool:
        return self not in (WorkerState.PENDING, WorkerState.RUNNING)


@dataclass(frozen=True)
class WorkerStatus:
    """A worker's state and, for messages, who it is and how it got there.

    ``detail`` reads as a sentence fragment: "worker pid 12 on host-a was killed by SIGKILL".
    """

    state: WorkerState
    detail: str = ""
    #: False when this process cannot see the worker (a local worker of another host): the state is a
    #: guess, and the run's heartbeats decide whether it lives.
    known: bool = True

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    def __str__(self) -> str:
        return self.detail or self.state.value


@dataclass(frozen=True)
class Fit:
    """A provisioning check's answer: the backend can ever satisfy a size, or the reason it cannot."""

    reason: str | None = None

    @property
    def fits(self) -> bool:
        return self.reason is None

    def __bool__(self) -> bool:
        return self.fits

    @classmethod
    def ok(cls) -> Fit:
        return cls(None)

    @classmethod
    def unfit(cls, reason: str) -> Fit:
        return cls(reason or "the backend refused the size")


@dataclass(frozen=True)
class NodeInfo:
    """One node of a compute as its backend sees it now (a Ray node, or this machine)."""

    address: str
    cpus: float
    gpus: float
    memory_gib: float
    #: Memory free now; None where the backend does not say (Ray's state API gives totals only).
    memory_available_gib: float | None = None
    gpu_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterResources:
    """A compute's live nodes, or why they could not be read (never an exception: pages show it)."""

    nodes: tuple[NodeInfo, ...] = ()
    #: The reason the backend could not be asked ("The Ray cluster at ... is not reachable (...)").
    unreachable: str | None = None


class WorkerHandle(ABC):
    """A started (or found) worker of one run."""

    run_id: str

    @abstractmethod
    def status(self) -> WorkerStatus:
        """The worker's state now (cheap enough to call every half second)."""

    def wait(self, timeout: float | None = None) -> WorkerStatus:
        """Wait up to ``timeout`` seconds (None: for ever) for the worker to end; its status then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (current := self.status()).is_final:
            if deadline is not None and time.monotonic() >= deadline:
                return current
            time.sleep(_WAIT_POLL_S)
        return current

    def cancel(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """Ask the worker to stop at its next safe point, keeping the best model so far.

        The run is ``CancelRequested`` in the store already; backends whose worker watches the store need
        nothing more (the default).
        """

    @abstractmethod
    def kill(self) -> None:
        """Stop the worker and everything it started now, without cleanup; nothing if it already ended."""

    @abstractmethod
    def describe(self) -> str:
        """Who the worker is, for messages: 'worker pid 1234 on host-a', 'Ray job mb-3f2a on ...'."""


class ComputeBackend(ABC):
    """One kind of compute: provisioning rules and checks, and the execution of training jobs."""

    #: The backend name, as in ``Compute.backend`` and ``--backend``.
    name: ClassVar[str] = ""
    #: The most nodes a compute may have (None: no limit).
    max_nodes: ClassVar[int | None] = None
    #: Whether the ``local`` size ("this machine as it is") makes sense on this backend.
    accepts_local_size: ClassVar[bool] = False
    #: Whether a compute of this backend has an address: False refuses one, True requires one.
    uses_address: ClassVar[bool] = False

    # --- provisioning -----------------------------------------------------------------------------

    def validate(self, spec: ComputeSpec) -> None:
        """Backend rules on a spec, checked once when the spec is made (before anything is created).

        The default checks the address against ``uses_address``; override to add rules (and call it).

        Raises:
            InvalidParameterError: the spec breaks a rule of this backend.
        """
        if self.uses_address and not spec.address:
            raise InvalidParameterError(
                f"A compute on the {self.name} backend needs an address. Got none for '{spec.name}'.",
                hint="Give the cluster's address with --address (e.g. http://127.0.0.1:8265).",
            )
        if not self.uses_address and spec.address:
            raise InvalidParameterError(
                f"A compute on the {self.name} backend has no address. Got {spec.address!r} for "
                f"'{spec.name}'.",
                hint="Leave --address out, or choose a backend that reaches a cluster (--backend ray).",
            )

    @abstractmethod
    def check(self, spec: ComputeSpec) -> Fit:
        """Whether this backend can ever satisfy ``spec`` (its size on one node, its nodes).

        An unreachable cluster is an unfit answer, not an exception: ``Fit.unfit("... not reachable")``.
        """

    def teardown(self, spec: ComputeSpec) -> None:  # noqa: B027 - optional hook, nothing by default
        """Release what the compute holds when it is deleted (nothing by default).

        Raises:
            Exception: teardown failed (the compute is left ``Failed`` with the reason).
        """

    def describe_resources(self, spec: ComputeSpec) -> ClusterResources | None:
        """The compute's live nodes and what each offers, read within a few seconds; None when this
        backend cannot tell (the default). An unreachable cluster is ``ClusterResources(unreachable=...)``,
        not an exception."""
        return None

    # --- execution --------------------------------------------------------------------------------

    @abstractmethod
    def start(self, job: TrainingJob, spec: ComputeSpec) -> WorkerHandle:
        """Launch the worker of ``job`` on the compute ``spec``; it runs on after we return.

        Raises:
            ComputeError: the worker could not be started.
        """

    @abstractmethod
    def find(self, job: TrainingJob, spec: ComputeSpec) -> WorkerHandle | None:
        """The worker started for ``job``'s run (from any process), or None if none was started."""


BackendFactory = Callable[[], ComputeBackend]

_REGISTRY: dict[str, BackendFactory] = {}
#: Built-in plugins, imported on first use; importing the module registers its backend.
_BUILT_IN = {"local": "modelbuilder.compute.local", "ray": "modelbuilder.compute.ray"}
#: Backends that need an extra: the package the extra installs, and the exact install hint.
_EXTRAS = {"ray": ("ray", RAY_INSTALL_HINT)}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``get_backend(name)`` return ``factory()`` (a later registration of the name replaces it)."""
    _REGISTRY[name] = factory


def unregister_backend(name: str) -> None:
    """Forget a registered backend (tests); nothing if it is not registered."""
    _REGISTRY.pop(name, None)


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _unavailable(name: str, why: str) -> MissingDependencyError:
    return MissingDependencyError(f"The {name} backend is not available here: {why}.", hint=_EXTRAS[name][1])


def _load_built_in(name: str) -> None:
    """Import a built-in plugin (which registers itself); a missing extra is a clear error."""
    module = _BUILT_IN.get(name)
    if module is None:
        return
    if name in _EXTRAS and not _importable(_EXTRAS[name][0]):
        # Checked every time, not only before the first import: the extra decides, not a cached plugin.
        raise _unavailable(name, f"the Python package '{_EXTRAS[name][0]}' is not installed")
    if name in _REGISTRY:
        return
    try:
        importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or ""
        # Only a missing extra (or plugin module) means "not installed"; any other ImportError is a bug.
        if name in _EXTRAS and (missing == module or missing.split(".")[0] == _EXTRAS[name][0]):
            raise _unavailable(name, str(exc)) from exc
        raise
    if name not in _REGISTRY and name in _EXTRAS:  # its module exists but could not offer the backend
        raise _unavailable(name, f"{module} did not register it")


def known_backends() -> list[str]:
    """The names of the backends registered so far and the built-in ones."""
    return sorted({*_REGISTRY, *_BUILT_IN})


def get_backend(name: str) -> ComputeBackend:
    """The plugin of backend ``name`` (a new object per call; plugins keep no run state).

    Raises:
        MissingDependencyError: a built-in backend whose extra is not installed (the hint installs it).
        InvalidParameterError: no backend has this name.
    """
    _load_built_in(name)
    if name not in _REGISTRY:
        known = ", ".join(known_backends())
        raise InvalidParameterError(
            f"The 'backend' parameter of a compute must be one of {known}. Got {name!r} instead.",
            hint=f"Use one of: {known}.",
        )
    return _REGISTRY[name]()
