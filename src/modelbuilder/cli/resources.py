"""``modelbuilder resource-group ...`` and ``modelbuilder workspace ...``."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import settings
from ..services import workspaces as service
from ..services.views import resource_group_view, workspace_view
from ..store.engine import mask_url
from ._common import (
    JsonOption,
    WorkspaceOption,
    message,
    print_fields,
    print_json,
    print_table,
)

resource_group_app = typer.Typer(
    help="Resource groups: named containers of workspaces.", no_args_is_help=True
)
workspace_app = typer.Typer(help="Workspaces: a metadata store plus an artifact root.", no_args_is_help=True)

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _confirm(question: str, yes: bool) -> None:
    if not yes and not typer.confirm(question, default=False, err=True):
        message("Nothing deleted.")
        raise typer.Exit(1)


# --- resource groups ------------------------------------------------------------------------------


@resource_group_app.command("create")
def resource_group_create(name: str, workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """Create an empty resource group."""
    group = service.create_resource_group(name)
    if json_:
        print_json(resource_group_view(group, []))
    else:
        message(f"Created resource group '{group.name}'.")


@resource_group_app.command("list")
def resource_group_list(workspace: WorkspaceOption = None, json_: JsonOption = False) -> None:
    """List resource groups and their workspaces."""
    groups = service.list_resource_groups()
    if json_:
        print_json([resource_group_view(group, held) for group, held in groups])
        return
    print_table(
        ["NAME", "WORKSPACES", "CREATED"],
        [
            [g.name, ", ".join(w.name for w in held), g.created_at.isoformat(timespec="seconds")]
            for g, held in groups
        ],
    )


@resource_group_app.command("show")
def resource_group_show(
    name: Annotated[str | None, typer.Argument(help="Default: the resource group of --workspace.")] = None,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Show a resource group and its workspaces."""
    if name is None:
        name = service.resolve_workspace(workspace).resource_group
    group, held = service.get_resource_group(name)
    if json_:
        print_json(resource_group_view(group, held))
        return
    print_fields(
        [
            ("name", group.name),
            ("created_at", group.created_at.isoformat(timespec="seconds")),
            ("workspaces", ", ".join(w.name for w in held) or "(none)"),
        ]
    )


@resource_group_app.command("delete")
def resource_group_delete(name: str, yes: YesOption = False, workspace: WorkspaceOption = None) -> None:
    """Delete a resource group with all its workspaces and their files."""
    _, held = service.get_resource_group(name)
    what = ", ".join(w.name for w in held) or "no workspaces"
    _confirm(f"Delete resource group '{name}' and everything in it ({what})?", yes)
    deletion = service.delete_resource_group(name)
    count = len(deletion.workspaces)
    message(f"Deleted resource group '{deletion.resource_group.name}' and {count} workspace(s).")


# --- workspaces -----------------------------------------------------------------------------------


StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="SQLAlchemy URL of the metadata store (default: a SQLite file); a PostgreSQL URL makes a "
        "workspace a team can share.",
    ),
]
ArtifactsOption = Annotated[
    str | None,
    typer.Option(
        "--artifacts",
        help="Artifact root folder (default: next to the workspace's files); for a shared workspace, a "
        "folder every machine can reach.",
    ),
]


@workspace_app.command("create")
def workspace_create(
    name: str,
    resource_group: Annotated[
        str, typer.Option("--resource-group", "-g", help="Created on first use.")
    ] = settings.DEFAULT_RESOURCE_GROUP,
    region: Annotated[str, typer.Option(help="A region from settings ('local' always exists).")] = (
        settings.DEFAULT_REGION
    ),
    store: StoreOption = None,
    artifacts: ArtifactsOption = None,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Create a workspace (with --store and --artifacts: one that other machines can attach to)."""
    created = service.create_workspace(name, resource_group, region, store, artifacts)
    if json_:
        print_json(workspace_view(created))
    else:
        message(
            f"Created workspace '{created.name}' in resource group '{created.resource_group}' "
            f"(region '{created.region}', store {mask_url(created.store_url)})."
        )


@workspace_app.command("attach")
def workspace_attach(
    name: str,
    store: Annotated[str, typer.Option("--store", help="SQLAlchemy URL of the shared workspace's store.")],
    artifacts: Annotated[
        str | None,
        typer.Option(
            "--artifacts", help="Where this machine sees the shared artifact root (default: as recorded)."
        ),
    ] = None,
    resource_group: Annotated[
        str, typer.Option("--resource-group", "-g", help="Created on first use.")
    ] = settings.DEFAULT_RESOURCE_GROUP,
    region: Annotated[str, typer.Option(help="A region from settings ('local' always exists).")] = (
        settings.DEFAULT_REGION
    ),
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Register on this machine a shared workspace that another machine created."""
    attached = service.attach_workspace(
        name, store, resource_group=resource_group, region=region, artifact_root=artifacts
    )
    if json_:
        print_json(workspace_view(attached))
    else:
        message(
            f"Attached workspace '{attached.name}' (store {mask_url(attached.store_url)}, artifacts "
            f"{attached.artifact_root})."
        )


@workspace_app.command("upgrade")
def workspace_upgrade(name: str, workspace: WorkspaceOption = None) -> None:
    """Upgrade a workspace's store to this modelbuilder's schema (shared stores are upgraded only so)."""
    before, after = service.upgrade_workspace(name)
    if before == after:
        message(f"Workspace '{name}' is already at schema revision {after}.")
    else:
        message(f"Upgraded workspace '{name}' from schema revision {before or '(empty)'} to {after}.")


@workspace_app.command("list")
def workspace_list(
    resource_group: Annotated[str | None, typer.Option("--resource-group", "-g")] = None,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """List workspaces."""
    found = service.list_workspaces(resource_group)
    if json_:
        print_json([workspace_view(w) for w in found])
        return
    print_table(
        ["NAME", "RESOURCE GROUP", "REGION", "STORE"],
        [[w.name, w.resource_group, w.region, mask_url(w.store_url)] for w in found],
    )


@workspace_app.command("show")
def workspace_show(
    name: Annotated[str | None, typer.Argument(help="Default: --workspace or the default one.")] = None,
    workspace: WorkspaceOption = None,
    json_: JsonOption = False,
) -> None:
    """Show a workspace."""
    found = service.resolve_workspace(name or workspace)
    view = workspace_view(found)
    if json_:
        print_json(view)
    else:
        print_fields(list(view.items()))


@workspace_app.command("delete")
def workspace_delete(name: str, yes: YesOption = False, workspace: WorkspaceOption = None) -> None:
    """Delete a workspace and its files (refused while one of its runs is active)."""
    found = service.get_workspace(name)
    _confirm(f"Delete workspace '{found.name}' with all its experiments, runs and artifacts?", yes)
    service.delete_workspace(found.name)
    message(f"Deleted workspace '{found.name}'.")
