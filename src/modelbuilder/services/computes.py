"""Computes of a workspace: provision, list, show, delete, and check that one can run training now."""

from __future__ import annotations

from ..compute import provisioning
from ..compute.provisioning import (
    LOCAL_BACKEND,
    LOCAL_COMPUTE_NAME,
    ensure_local_compute,
    provision_compute,
)
from ..compute.sizes import list_sizes
from ..entities import Compute, ComputeSize, ProvisioningState
from ..errors import ComputeError, ComputeNotFoundError, InvalidStateError
from .workspaces import ACTIVE_STATUSES, WorkspaceSession

__all__ = [
    "create_compute",
    "delete_compute",
    "get_compute",
    "list_computes",
    "list_sizes",
    "require_usable_compute",
]


def create_compute(
    session: WorkspaceSession,
    name: str,
    size: str,
    backend: str = LOCAL_BACKEND,
    min_nodes: int = 0,
    max_nodes: int = 1,
    idle_seconds_before_scaledown: int = 1800,
    address: str | None = None,
) -> Compute:
    """Provision a compute; it ends ``Succeeded``, or ``Failed`` with the reason (and is kept).

    Raises:
        InvalidNameError: the name breaks the compute name rule.
        NotFoundError: the size is not in the catalog.
        InvalidParameterError: the backend is unknown, or the nodes do not suit it.
        ComputeExistsError: a compute with this name exists, in whatever state.
    """
    return provision_compute(
        session.store,
        name,
        size,
        backend=backend,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        idle_seconds_before_scaledown=idle_seconds_before_scaledown,
        address=address,
    )


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
            hint=f"Create it with: modelbuilder compute create {name} --size SIZE, list computes with: "
            "modelbuilder compute list, or train on this machine with --compute local",
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
            hint=f"Cancel them first: modelbuilder run cancel {busy[0].id[:12]}",
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
        f"fits: modelbuilder compute delete {name}; modelbuilder compute create {name} --size SIZE "
        "(sizes: modelbuilder compute sizes)",
    )


def sizes() -> list[ComputeSize]:
    """The size catalog (``modelbuilder compute sizes``)."""
    return list_sizes()
