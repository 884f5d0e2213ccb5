"""Resource groups and workspaces: the catalog entry, the metadata store and the artifact root together.

``open_workspace(name)`` is how every command gets at a workspace: it resolves the name (the default
workspace — ``MODELBUILDER_WORKSPACE`` or ``default`` — is created on first use, in the ``default``
resource group and the ``local`` region), opens its store and artifact root, and makes sure the ``local``
compute exists. Deleting a workspace or a resource group removes the workspace files too, and is refused
while one of its runs is still active.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import settings
from ..artifacts.local import LocalArtifactStore
from ..compute.job import RunFolders
from ..compute.provisioning import ensure_local_compute
from ..entities import ResourceGroup, RunStatus, Workspace
from ..errors import AlreadyExistsError, InvalidStateError, WorkspaceNotFoundError
from ..store import Catalog, ResourceGroupDeletion, open_workspace_store, workspace_folder
from ..store.base import MetadataStore

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = tuple(status for status in RunStatus if not status.is_terminal)


@dataclass
class WorkspaceSession:
    """An open workspace: its catalog entry, metadata store and artifact store. Close it when done."""

    workspace: Workspace
    store: MetadataStore
    artifacts: LocalArtifactStore

    @property
    def name(self) -> str:
        return self.workspace.name

    @property
    def folder(self) -> Path:
        """The folder of the workspace's local files (artifacts, checkpoints, worker folders)."""
        return workspace_folder(self.workspace)

    def run_folders(self, run_id: str) -> RunFolders:
        return RunFolders(self.folder, run_id)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> WorkspaceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_session(workspace: Workspace) -> WorkspaceSession:
    """Open a catalog workspace: its store (schema created or migrated), artifact root, ``local`` compute.

    Raises:
        SchemaVersionError: its store was written by a newer modelbuilder.
        WorkspaceError: its store cannot be opened.
    """
    store = open_workspace_store(workspace)
    try:
        ensure_local_compute(store)
        artifacts = LocalArtifactStore(workspace.artifact_root)
        artifacts.root.mkdir(parents=True, exist_ok=True)
    except BaseException:
        store.close()
        raise
    return WorkspaceSession(workspace, store, artifacts)


# --- resource groups ------------------------------------------------------------------------------


def create_resource_group(name: str) -> ResourceGroup:
    """Create an empty resource group.

    Raises:
        InvalidNameError: the name breaks the resource group name rule.
        AlreadyExistsError: a resource group has this name.
    """
    with Catalog() as catalog:
        return catalog.create_resource_group(name)


def list_resource_groups() -> list[tuple[ResourceGroup, list[Workspace]]]:
    """Every resource group with its workspaces, by name."""
    with Catalog() as catalog:
        return [(group, catalog.list_workspaces(group.name)) for group in catalog.list_resource_groups()]


def get_resource_group(name: str) -> tuple[ResourceGroup, list[Workspace]]:
    """A resource group and its workspaces.

    Raises:
        ResourceGroupNotFoundError: none has this name.
    """
    with Catalog() as catalog:
        group = catalog.get_resource_group(name)
        return group, catalog.list_workspaces(group.name)


def delete_resource_group(name: str) -> ResourceGroupDeletion:
    """Delete a resource group, its workspaces and their files.

    Raises:
        ResourceGroupNotFoundError: none has this name.
        InvalidStateError: a run in one of its workspaces is still active.
    """
    _, held = get_resource_group(name)
    for workspace in held:
        _refuse_active_runs(workspace, f"resource group '{name}'")
    with Catalog() as catalog:
        deletion = catalog.delete_resource_group(name)
    for workspace in deletion.workspaces:
        _remove_files(workspace)
    return deletion


# --- workspaces -----------------------------------------------------------------------------------


def create_workspace(
    name: str,
    resource_group: str = settings.DEFAULT_RESOURCE_GROUP,
    region: str = settings.DEFAULT_REGION,
    store_url: str | None = None,
) -> Workspace:
    """Create a workspace: catalog entry (resource group on first use), store schema, artifact root,
    and the ``local`` compute.

    Raises:
        InvalidNameError: the workspace or resource group name breaks its rule.
        NotFoundError: the region is not defined.
        InvalidParameterError: the store URL is malformed.
        AlreadyExistsError: a workspace has this name on this machine.
        WorkspaceError: the store cannot be opened (the catalog entry is removed again).
    """
    with Catalog() as catalog:
        workspace = catalog.create_workspace(name, resource_group, region, store_url)
        try:
            open_session(workspace).close()
        except BaseException:
            catalog.delete_workspace(workspace.name)
            raise
    return workspace


def get_workspace(name: str) -> Workspace:
    """The workspace with this name.

    Raises:
        WorkspaceNotFoundError: none has this name.
    """
    with Catalog() as catalog:
        return catalog.get_workspace(name)


def list_workspaces(resource_group: str | None = None) -> list[Workspace]:
    """Workspaces by name, all or those of one resource group."""
    with Catalog() as catalog:
        return catalog.list_workspaces(resource_group)


def resolve_workspace(name: str | None = None) -> Workspace:
    """The workspace ``name``; None means the default one, which is created on first use.

    Raises:
        WorkspaceNotFoundError: a workspace other than the default one was named and does not exist.
    """
    default = settings.default_workspace_name()
    wanted = name or default
    with Catalog() as catalog:
        found = catalog.find_workspace(wanted)
    if found is not None:
        return found
    if wanted.lower() != default.lower():
        raise WorkspaceNotFoundError(
            f"Workspace '{wanted}' not found on this machine.",
            hint=f"Create it with: modelbuilder workspace create {wanted}, or list workspaces with: "
            "modelbuilder workspace list",
        )
    logger.info("Creating the default workspace %s", wanted)
    try:
        return create_workspace(wanted)
    except AlreadyExistsError:  # created meanwhile by another process
        return get_workspace(wanted)


def open_workspace(name: str | None = None) -> WorkspaceSession:
    """Open a workspace (the default one when ``name`` is None); close the session when done.

    Raises:
        WorkspaceNotFoundError: a workspace other than the default one was named and does not exist.
        SchemaVersionError: its store was written by a newer modelbuilder.
        WorkspaceError: its store cannot be opened.
    """
    return open_session(resolve_workspace(name))


def delete_workspace(name: str) -> Workspace:
    """Delete a workspace and its files (metadata of a server store stays on that server).

    Raises:
        WorkspaceNotFoundError: none has this name.
        InvalidStateError: one of its runs is still active.
    """
    workspace = get_workspace(name)
    _refuse_active_runs(workspace, f"workspace '{workspace.name}'")
    with Catalog() as catalog:
        deleted = catalog.delete_workspace(workspace.name)
    _remove_files(deleted)
    return deleted


def _refuse_active_runs(workspace: Workspace, what: str) -> None:
    try:
        session = open_session(workspace)
    except Exception as exc:  # a broken store must not block deleting the workspace
        logger.warning("Could not check the runs of workspace %s: %s", workspace.name, exc)
        return
    with session:
        from .runs import reap_lost_runs

        reap_lost_runs(session)
        active = session.store.list_runs(parent_run_id=None, statuses=ACTIVE_STATUSES, limit=5)
    if active:
        ids = ", ".join(run.id[:12] for run in active)
        raise InvalidStateError(
            f"Cannot delete {what}: run(s) {ids} in workspace '{workspace.name}' are still active.",
            hint=f"Cancel them first: modelbuilder run cancel {active[0].id[:12]} --workspace "
            f"{workspace.name}",
        )


def _remove_files(workspace: Workspace) -> None:
    folder = workspace_folder(workspace)
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("Removed the files of workspace %s at %s", workspace.name, folder)
