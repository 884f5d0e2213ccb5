"""``modelbuilder compute create/list/show/delete/sizes``."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import hints
from ..compute.spec import LOCAL_BACKEND, ComputeSpec
from ..entities import ProvisioningState
from ..services import computes as service
from ..services.views import compute_view, size_view
from ._common import (
    EXIT_ERROR,
    JsonOption,
    WorkspaceOption,
    message,
    print_fields,
    print_json,
    print_table,
    workspace_session,
)

compute_app = typer.Typer(help="Computes: where training runs.", no_args_is_help=True)


@compute_app.command("create")
def compute_create(
    name: str,
    size: Annotated[str, typer.Option("--size", "-s", help="A size from: modelbuilder compute sizes")],
    backend: Annotated[str, typer.Option(help="local (this machine) or ray.")] = LOCAL_BACKEND,
    address: Annotated[
        str | None,
        typer.Option(help="Where the backend reaches the compute: a Ray dashboard, http://HOST:8265."),
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option(
            help="The environment variable that holds the cluster's token (Ray token mode); the token "
            "itself is never stored.",
        ),
    ] = None,
    min_nodes: Annotated[int, typer.Option(min=0)] = 0,
    max_nodes: Annotated[int, typer.Option(min=1)] = 1,
    idle_seconds: Annotated[
        int, typer.Option(min=0, help="Idle seconds before scaling down (where the backend scales).")
    ] = 1800,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Provision a compute. If the backend can never satisfy the size, it is kept in state Failed."""
    spec = ComputeSpec.create(
        name,
        size,
        backend=backend,
        address=address,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        idle_seconds_before_scaledown=idle_seconds,
        token_ref=token_env,
    )
    with workspace_session(workspace) as session:
        compute = service.create_compute(session, spec)
    if json_:
        print_json(compute_view(compute))
    if compute.state is ProvisioningState.FAILED:
        message(f"Error: Compute '{compute.name}' ({compute.size}) failed to provision: {compute.error}.")
        delete = hints.command("compute", "delete", compute.name, workspace=workspace)
        message(
            f"Hint: It is kept in state Failed. Delete it ({delete}) "
            f"and create it with a size that fits: {hints.command('compute', 'sizes')}"
        )
        raise typer.Exit(EXIT_ERROR)
    if not json_:
        message(
            f"Created compute '{compute.name}' ({compute.size}, {compute.backend}): {compute.state.value}."
        )


@compute_app.command("list")
def compute_list(workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """List the computes of a workspace."""
    with workspace_session(workspace) as session:
        found = service.list_computes(session)
    if json_:
        print_json([compute_view(c) for c in found])
        return
    print_table(
        ["NAME", "SIZE", "BACKEND", "STATE", "ERROR"],
        [[c.name, c.size, c.backend, c.state.value, c.error] for c in found],
    )


@compute_app.command("show")
def compute_show(name: str, workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """Show a compute (with its error when it is Failed)."""
    with workspace_session(workspace) as session:
        view = compute_view(service.get_compute(session, name))
    if json_:
        print_json(view)
    else:
        print_fields(list(view.items()))


@compute_app.command("delete")
def compute_delete(name: str, workspace: WorkspaceOption = None) -> None:
    """Delete a compute in any state (a Failed one too, which frees its name)."""
    with workspace_session(workspace) as session:
        deleted = service.delete_compute(session, name)
    message(f"Deleted compute '{deleted.name}' (was {deleted.state.value}).")


@compute_app.command("sizes")
def compute_sizes(workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """List the compute sizes of the catalog."""
    sizes = service.sizes()
    if json_:
        print_json([size_view(s) for s in sizes])
        return
    print_table(
        ["NAME", "VCPU", "MEMORY GIB", "TEMP SSD GIB", "GPUS", "GPU MEMORY GIB", "MAX DATA DISKS",
         "MAX NICS", "DESCRIPTION"],
        [
            [s.name, s.vcpus, f"{s.memory_gib:g}", s.temp_storage_gib, s.gpus, s.gpu_memory_gib,
             s.max_data_disks, s.max_nics, s.description]
            if s.name != "local"
            else [s.name, "-", "-", "-", "-", "-", "-", "-", s.description]
            for s in sizes
        ],
    )
