"""Provisioning computes: can a backend ever satisfy a size, and the errored-compute rule.

``provision_compute`` records the compute as ``Creating``, asks the backend's *fit check* whether it can
ever give the size what it asks for, and ends ``Succeeded`` or ``Failed``. A failed compute is kept with
its error, and its name stays taken until it is deleted (the source's errored-compute rule): creating it
again raises ``ComputeExistsError`` naming the state and the reason, with both fixes in the hint.

The check is the backend plugin's ``check(spec) -> Fit`` (``compute.backend``): the local backend compares
GPUs, cores and memory with this machine (``MachineCapacity``, ``check_local_fit`` below); a Ray backend
asks its cluster. The spec was validated when it was made (``ComputeSpec.create``), so nothing here checks
names, sizes or nodes again.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

from ..entities import Compute, ComputeSize, ProvisioningState
from ..errors import ComputeError, ComputeExistsError, InvalidStateError, ModelBuilderError
from ..hints import command
from ..store.base import MetadataStore
from .backend import ComputeBackend, Fit, get_backend
from .sizes import LOCAL_SIZE_NAME, is_local_size
from .spec import LOCAL_BACKEND, ComputeSpec

logger = logging.getLogger(__name__)

__all__ = [
    "LOCAL_BACKEND",
    "LOCAL_COMPUTE_NAME",
    "MachineCapacity",
    "check_local_fit",
    "delete_compute",
    "ensure_local_compute",
    "provision_compute",
]

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


def provision_compute(
    store: MetadataStore, spec: ComputeSpec, *, backend: ComputeBackend | None = None
) -> Compute:
    """Create a compute: ``Creating``, then ``Succeeded``, or ``Failed`` with the reason kept.

    Args:
        store: the workspace's metadata store.
        spec: the validated spec (``ComputeSpec.create``).
        backend: the plugin whose ``check`` decides (default: the registered one of ``spec.backend``).

    Returns:
        The compute as it ended: Succeeded, or Failed with ``error`` saying why.

    Raises:
        ComputeExistsError: a compute with this name exists, in whatever state.
    """
    plugin = backend or get_backend(spec.backend)
    store.create_compute(
        spec.name,
        size=spec.size.name,
        backend=spec.backend,
        min_nodes=spec.min_nodes,
        max_nodes=spec.max_nodes,
        idle_seconds_before_scaledown=spec.idle_seconds_before_scaledown,
        address=spec.address,
        token_ref=spec.token_ref,
    )
    try:
        fit = plugin.check(spec)
    except ModelBuilderError as exc:  # e.g. the cluster is unreachable: that is a reason too
        fit = Fit.unfit(str(exc))
    except Exception as exc:
        store.set_compute_state(spec.name, ProvisioningState.FAILED, error=f"unexpected error: {exc}")
        raise
    if not fit.fits:
        logger.warning("Compute %s failed to provision: %s", spec.describe(), fit.reason)
        return store.set_compute_state(spec.name, ProvisioningState.FAILED, error=fit.reason)
    return store.set_compute_state(spec.name, ProvisioningState.SUCCEEDED)


def _teardown(compute: Compute) -> None:
    """The backend's teardown of a compute being deleted; skipped (with a warning) when its backend or
    size is no longer available here: a compute must stay deletable."""
    try:
        spec = ComputeSpec.from_compute(compute)
        plugin = get_backend(compute.backend)
    except ModelBuilderError as exc:
        logger.warning("Compute %s is deleted without its backend's teardown: %s", compute.name, exc)
        return
    plugin.teardown(spec)


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
    try:
        _teardown(before)
    except Exception as exc:
        store.set_compute_state(name, ProvisioningState.FAILED, error=f"delete failed: {exc}")
        raise ComputeError(
            f"Compute '{name}' could not be deleted: {exc}.",
            hint=f"Fix the cause and run again: {command('compute', 'delete', name)}",
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
