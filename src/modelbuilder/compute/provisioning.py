"""Provisioning computes: can a backend ever satisfy a size, and the errored-compute rule.

``provision_compute`` records the compute as ``Creating``, asks the backend's *fit check* whether it can
ever give the size what it asks for, and ends ``Succeeded`` or ``Failed``. A failed compute is kept with
its error, and its name stays taken until it is deleted (the source's errored-compute rule): creating it
again raises ``ComputeExistsError`` naming the state and the reason, with both fixes in the hint.

Fit checks are pluggable per backend (``register_backend``): the local backend compares GPUs, cores and
memory with this machine; a Ray backend brings one that asks its cluster.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from ..entities import Compute, ComputeSize, ProvisioningState
from ..errors import (
    ComputeError,
    ComputeExistsError,
    InvalidParameterError,
    InvalidStateError,
    ModelBuilderError,
)
from ..names import check_compute_name
from ..store.base import MetadataStore
from .sizes import LOCAL_SIZE_NAME, get_size, is_local_size

logger = logging.getLogger(__name__)

LOCAL_BACKEND = "local"
LOCAL_COMPUTE_NAME = "local"
#: Physical memory an OS reports is a little below the nominal size (kernel, firmware): allow 10 %.
MEMORY_TOLERANCE = 0.10
_NVIDIA_SMI_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class MachineCapacity:
    """What a machine has: CPU cores, physical memory, GPUs."""

    cores: int
    memory_gib: float
    gpus: int
    gpu_names: tuple[str, ...] = ()

    @classmethod
    def detect(cls) -> MachineCapacity:
        """This machine's capacity (detected once per process)."""
        return _detect_capacity()


def _count_gpus() -> tuple[str, ...]:
    """GPU names from ``nvidia-smi -L`` (none without it), limited by CUDA_VISIBLE_DEVICES when set."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return ()
    try:
        listing = subprocess.run(
            [executable, "-L"], capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.info("nvidia-smi -L failed (%s); counting 0 GPUs", exc)
        return ()
    if listing.returncode != 0:
        logger.info("nvidia-smi -L exited with %d; counting 0 GPUs", listing.returncode)
        return ()
    names = tuple(
        line.split(":", 1)[1].split("(UUID")[0].strip() if ":" in line else line.strip()
        for line in listing.stdout.splitlines()
        if line.startswith("GPU ")
    )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [v for v in visible.split(",") if v.strip()]
        if not entries or entries[0].strip() == "-1":
            return ()
        names = names[: len(entries)]
    return names


@lru_cache(maxsize=1)
def _detect_capacity() -> MachineCapacity:
    import psutil

    gpu_names = _count_gpus()
    return MachineCapacity(
        cores=os.cpu_count() or 1,
        memory_gib=psutil.virtual_memory().total / 2**30,
        gpus=len(gpu_names),
        gpu_names=gpu_names,
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def check_local_fit(size: ComputeSize, capacity: MachineCapacity) -> str | None:
    """None if this machine can ever satisfy ``size``, else the reason (e.g. "needs 2 GPUs, this machine
    has 0"). The ``local`` size always fits; memory may be up to ``MEMORY_TOLERANCE`` below nominal."""
    if is_local_size(size):
        return None
    reasons = []
    if size.gpus > capacity.gpus:
        reasons.append(f"needs {_plural(size.gpus, 'GPU')}, this machine has {capacity.gpus}")
    if size.vcpus > capacity.cores:
        reasons.append(f"needs {_plural(size.vcpus, 'vCPU')}, this machine has {capacity.cores}")
    if size.memory_gib * (1 - MEMORY_TOLERANCE) > capacity.memory_gib:
        reasons.append(
            f"needs {size.memory_gib:g} GiB of memory, this machine has {capacity.memory_gib:.1f} GiB"
        )
    return "; ".join(reasons) or None


#: A fit check: given the compute being created and its size, None if the backend can ever satisfy it,
#: else the reason. It may raise ModelBuilderError (e.g. cluster unreachable): that is a reason too.
FitCheck = Callable[[Compute, ComputeSize], "str | None"]


@dataclass(frozen=True)
class BackendRules:
    """What provisioning needs to know about a backend.

    Args:
        name: the backend name used in ``--backend``.
        fit_check: can the backend ever satisfy a size.
        max_nodes: the most nodes a compute may have (None: no limit).
        accepts_local_size: whether the ``local`` size ("this machine") makes sense on it.
        teardown: called when a compute is deleted (release a cluster...); None when nothing to do.
    """

    name: str
    fit_check: FitCheck
    max_nodes: int | None = None
    accepts_local_size: bool = False
    teardown: Callable[[Compute], None] | None = None


class LocalFitCheck:
    """The local backend's fit check: compares a size with this machine (or a given capacity)."""

    def __init__(self, capacity: MachineCapacity | None = None) -> None:
        self.capacity = capacity

    def __call__(self, compute: Compute, size: ComputeSize) -> str | None:
        return check_local_fit(size, self.capacity or MachineCapacity.detect())


_BACKENDS: dict[str, BackendRules] = {}


def register_backend(rules: BackendRules) -> None:
    """Make provisioning know a backend (a later registration of the same name replaces it)."""
    _BACKENDS[rules.name] = rules


def get_backend_rules(name: str) -> BackendRules:
    """The rules of a registered backend.

    Raises:
        InvalidParameterError: no backend has this name.
    """
    if name not in _BACKENDS:
        known = ", ".join(sorted(_BACKENDS))
        raise InvalidParameterError(
            f"The 'backend' parameter of a compute must be one of {known}. Got {name!r} instead.",
            hint='The ray backend needs its extra: pip install "modelbuilder[ray]"'
            if name == "ray"
            else f"Use one of: {known}.",
        )
    return _BACKENDS[name]


register_backend(BackendRules(LOCAL_BACKEND, LocalFitCheck(), max_nodes=1, accepts_local_size=True))


def provision_compute(
    store: MetadataStore,
    name: str,
    size: str,
    backend: str = LOCAL_BACKEND,
    min_nodes: int = 0,
    max_nodes: int = 1,
    idle_seconds_before_scaledown: int = 1800,
    capacity: MachineCapacity | None = None,
    fit_check: FitCheck | None = None,
    address: str | None = None,
) -> Compute:
    """Create a compute: ``Creating``, then ``Succeeded``, or ``Failed`` with the reason kept.

    Args:
        store: the workspace's metadata store.
        name: 2-16 letters, digits and hyphens.
        size: a catalog size name (case-insensitive).
        backend: a registered backend (``local``; ``ray`` once its extra is installed).
        min_nodes, max_nodes, idle_seconds_before_scaledown: scaling, where the backend supports it.
        capacity: the machine to compare with for the local backend (default: this machine).
        fit_check: replaces the backend's fit check.
        address: where the backend reaches the compute (a Ray cluster address).

    Returns:
        The compute as it ended: Succeeded, or Failed with ``error`` saying why.

    Raises:
        InvalidNameError: the name breaks the compute name rule.
        NotFoundError: the size is not in the catalog.
        InvalidParameterError: the backend is unknown, or the nodes do not suit it.
        ComputeExistsError: a compute with this name exists, in whatever state.
    """
    check_compute_name(name)
    spec = get_size(size)
    rules = get_backend_rules(backend)
    if is_local_size(spec) and not rules.accepts_local_size:
        raise InvalidParameterError(
            f"The size '{LOCAL_SIZE_NAME}' means this machine; it cannot be used with the {backend} backend.",
            hint="Choose a size from: modelbuilder compute sizes",
        )
    if rules.max_nodes is not None and max_nodes > rules.max_nodes:
        raise InvalidParameterError(
            f"The 'max_nodes' parameter of compute '{name}' must be at most {rules.max_nodes} on the "
            f"{backend} backend. Got {max_nodes!r} instead.",
            hint="The local backend runs on this machine only; use the ray backend for several nodes."
            if backend == LOCAL_BACKEND
            else None,
        )
    compute = store.create_compute(
        name,
        size=spec.name,
        backend=backend,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        idle_seconds_before_scaledown=idle_seconds_before_scaledown,
        address=address,
    )
    check = fit_check or (LocalFitCheck(capacity) if backend == LOCAL_BACKEND else rules.fit_check)
    try:
        reason = check(compute, spec)
    except ModelBuilderError as exc:
        reason = str(exc)
    except Exception as exc:
        store.set_compute_state(name, ProvisioningState.FAILED, error=f"unexpected error: {exc}")
        raise
    if reason:
        logger.warning("Compute %s (%s) failed to provision: %s", name, spec.name, reason)
        return store.set_compute_state(name, ProvisioningState.FAILED, error=reason)
    return store.set_compute_state(name, ProvisioningState.SUCCEEDED)


def delete_compute(store: MetadataStore, name: str) -> Compute:
    """Delete a compute in any state: ``Deleting``, the backend's teardown, then removal.

    Returns:
        The compute as it was before deletion started.

    Raises:
        ComputeNotFoundError: no such compute.
        InvalidStateError: the compute is ``local``, which always exists.
        ComputeError: the backend's teardown failed (the compute is left ``Failed`` with the reason).
    """
    if name == LOCAL_COMPUTE_NAME:
        raise InvalidStateError(
            "The compute 'local' always exists in every workspace and cannot be deleted.",
            hint="Delete the computes you created; 'local' is this machine.",
        )
    before = store.get_compute(name)
    if before.state is not ProvisioningState.DELETING:
        store.set_compute_state(name, ProvisioningState.DELETING, error=before.error)
    rules = get_backend_rules(before.backend) if before.backend in _BACKENDS else None
    if rules is not None and rules.teardown is not None:
        try:
            rules.teardown(before)
        except Exception as exc:
            store.set_compute_state(name, ProvisioningState.FAILED, error=f"delete failed: {exc}")
            raise ComputeError(
                f"Compute '{name}' could not be deleted: {exc}.",
                hint=f"Fix the cause and run again: modelbuilder compute delete {name}",
            ) from exc
    store.delete_compute(name)
    return before


def ensure_local_compute(store: MetadataStore) -> Compute:
    """The compute named ``local`` (this machine, as it is), created ``Succeeded`` if missing."""
    found = store.find_compute(LOCAL_COMPUTE_NAME)
    if found is not None:
        return found
    try:
        return store.create_compute(
            LOCAL_COMPUTE_NAME,
            size=LOCAL_SIZE_NAME,
            backend=LOCAL_BACKEND,
            state=ProvisioningState.SUCCEEDED,
        )
    except ComputeExistsError:  # created meanwhile by another process
        return store.get_compute(LOCAL_COMPUTE_NAME)
