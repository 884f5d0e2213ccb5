"""Computes of a workspace: provision, list, show, delete, and check that one can run training now.

Every caller (CLI, Python API, portal) builds a ``ComputeSpec`` with ``ComputeSpec.create`` (validated
there, once) and passes it to ``create_compute(session, spec)``.
"""

from __future__ import annotations

from .. import hints
from ..compute import provisioning
from ..compute.backend import ClusterResources, get_backend
from ..compute.provisioning import LOCAL_COMPUTE_NAME, ensure_local_compute, provision_compute
from ..compute.sizes import list_sizes
from ..compute.spec import ComputeSpec
from ..entities import Compute, ComputeSize, ProvisioningState
from ..errors import ComputeError, ComputeNotFoundError, InvalidStateError, ModelBuilderError
from .workspaces import ACTIVE_STATUSES, WorkspaceSession

__all__ = [
    "ClusterResources",
    "ComputeSpec",
    "compute_resources",
    "create_compute",
    "delete_compute",
    "get_compute",
    "get_compute_spec",
    "list_computes",
    "list_sizes",
    "require_usable_compute",
]


def create_compute(session: WorkspaceSession, spec: ComputeSpec) -> Compute:
    """Provision a compute from its validated spec (``ComputeSpec.create``); it ends ``Succeeded``, or
    ``Failed`` with the reason (and is kept).

    Raises:
        ComputeExistsError: a compute with this name exists, in whatever state.
    """
    return provision_compute(session.store, spec)


def get_compute_spec(session: WorkspaceSession, name: str) -> ComputeSpec:
    """The spec of the compute ``name`` (what a backend gets with every job).

    Raises:
        ComputeNotFoundError: none has this name.
        NotFoundError: its size is no longer in the catalog.
    """
    return ComputeSpec.from_compute(get_compute(session, name))


def compute_resources(session: WorkspaceSession, name: str) -> ClusterResources | None:
    """The live nodes of the compute ``name`` and what each offers (this machine for ``local``), read
    within a few seconds; None when its backend cannot tell. A cluster that cannot be asked (unreachable,
    its backend not installed here, its size gone from the catalog) gives ``unreachable=reason``.

    Raises:
        ComputeNotFoundError: none has this name.
    """
    compute = get_compute(session, name)
    try:
        return get_backend(compute.backend).describe_resources(ComputeSpec.from_compute(compute))
    except ModelBuilderError as exc:
        return ClusterResources(unreachable=exc.message)


def list_computes(session: WorkspaceSession) -> list[Compute]:
    """Every compute of the workspace by name (``local`` always among them)."""
    ensure_local_compute(session.store)
    return session.store.list_computes()


def get_compute(session: WorkspaceSession, name: str) -> Compute:
    """The compute with this name.

    Raises:
        ComputeNotFoundError: none has this name.
    """
    if name == LOCAL_COMPUTE_NAME:
        return ensure_local_compute(session.store)
    found = session.store.find_compute(name)
    if found is None:
        raise ComputeNotFoundError(
            f"Compute '{name}' not found in workspace '{session.name}'.",
            hint=f"Create it with: {hints.command('compute', 'create', name, size='SIZE')}, list computes "
            f"with: {hints.command('compute', 'list')}, or train on this machine with --compute local",
        )
    return found


def delete_compute(session: WorkspaceSession, name: str) -> Compute:
    """Delete a compute in any state (a Failed one too, which frees its name).

    Raises:
        ComputeNotFoundError: none has this name.
        InvalidStateError: it is ``local``, or a run on it is still active.
        ComputeError: the backend's teardown failed.
    """
    get_compute(session, name)
    busy = [
        run
        for run in session.store.list_runs(parent_run_id=None, statuses=ACTIVE_STATUSES, limit=None)
        if run.compute == name
    ]
    if busy:
        raise InvalidStateError(
            f"Compute '{name}' runs {len(busy)} active run(s) ({busy[0].id[:12]}...); it cannot be "
            "deleted now.",
            hint=f"Cancel them first: {hints.command('run', 'cancel', hints.short_id(busy[0].id))}",
        )
    return provisioning.delete_compute(session.store, name)


def require_usable_compute(session: WorkspaceSession, name: str) -> Compute:
    """The compute ``name`` if it can run training now (state ``Succeeded``).

    Raises:
        ComputeNotFoundError: none has this name.
        ComputeError: it is not ``Succeeded``; the message names its state and error, the hint the fixes.
    """
    compute = get_compute(session, name)
    if compute.state is ProvisioningState.SUCCEEDED:
        return compute
    reason = f" ({compute.error})" if compute.error else ""
    raise ComputeError(
        f"Compute '{name}' is in state {compute.state.value}{reason}; it cannot run training.",
        hint=f"Train on another compute (e.g. --compute local), or delete it and create it with a size that "
        f"fits: {hints.command('compute', 'delete', name)}; "
        f"{hints.command('compute', 'create', name, size='SIZE')} "
        f"(sizes: {hints.command('compute', 'sizes')})",
    )


def sizes() -> list[ComputeSize]:
    """The size catalog (``modelbuilder compute sizes``)."""
    return list_sizes()
