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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import hints, settings
from ..artifacts.local import LocalArtifactStore
from ..compute.job import RunFolders
from ..compute.provisioning import ensure_local_compute
from ..entities import ResourceGroup, RunStatus, Workspace
from ..errors import (
    AlreadyExistsError,
    InvalidStateError,
    ModelBuilderError,
    WorkspaceError,
    WorkspaceNotFoundError,
)
from ..names import check_workspace_name
from ..store import (
    STORE_SCHEMA,
    Catalog,
    ResourceGroupDeletion,
    claim_store,
    default_workspace_folder,
    mask_url,
    open_workspace_store,
    read_workspace_properties,
    upgrade_store,
    workspace_folder,
)
from ..store.base import MetadataStore
from ..store.properties import ARTIFACT_ROOT, WORKSPACE_NAME

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


# --- the catalog ----------------------------------------------------------------------------------


@dataclass
class CatalogSession:
    """This machine's catalog (resource groups and workspaces), held open by a long-lived process.

    A command opens the catalog for each call; the portal reads it on every request, so it opens one
    ``CatalogSession`` (``open_catalog``) and passes it as ``catalog=`` to the functions below. Close it
    when done.
    """

    catalog: Catalog

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> CatalogSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_catalog() -> CatalogSession:
    """Open this machine's catalog (``$MODELBUILDER_HOME/catalog.db``) for many reads.

    Raises:
        SchemaVersionError: the catalog was written by a newer modelbuilder.
    """
    return CatalogSession(Catalog())


@contextmanager
def _catalog(held: CatalogSession | None) -> Iterator[Catalog]:
    """The held catalog, or one opened for this call only."""
    if held is not None:
        yield held.catalog
        return
    with Catalog() as catalog:
        yield catalog


# --- resource groups ------------------------------------------------------------------------------


def create_resource_group(name: str) -> ResourceGroup:
    """Create an empty resource group.

    Raises:
        InvalidNameError: the name breaks the resource group name rule.
        AlreadyExistsError: a resource group has this name.
    """
    with Catalog() as catalog:
        return catalog.create_resource_group(name)


def list_resource_groups(
    *, catalog: CatalogSession | None = None
) -> list[tuple[ResourceGroup, list[Workspace]]]:
    """Every resource group with its workspaces, by name."""
    with _catalog(catalog) as found:
        return [(group, found.list_workspaces(group.name)) for group in found.list_resource_groups()]


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
    artifact_root: str | Path | None = None,
) -> Workspace:
    """Create a workspace: catalog entry (resource group on first use), store schema, artifact root,
    and the ``local`` compute. The store records the workspace's name and artifact root, so other machines
    can attach to it (``attach_workspace``).

    Raises:
        InvalidNameError: the workspace or resource group name breaks its rule.
        NotFoundError: the region is not defined.
        InvalidParameterError: the store URL is malformed.
        AlreadyExistsError: a workspace has this name on this machine, or the store already holds one.
        SchemaVersionError / WorkspaceError: the store cannot be opened (the catalog entry is removed again).
    """
    with Catalog() as catalog:
        workspace = catalog.create_workspace(name, resource_group, region, store_url, artifact_root)
        try:
            open_session(workspace).close()
            owner = claim_store(workspace.store_url, workspace.name, workspace.artifact_root)
            if owner is not None:
                held = owner.get(WORKSPACE_NAME, "?")
                raise AlreadyExistsError(
                    f"The store {mask_url(workspace.store_url)} already holds workspace '{held}'.",
                    hint="Register that workspace on this machine with: "
                    + hints.command("workspace", "attach", held, store="URL")
                    + ", or give an empty database to --store.",
                )
        except BaseException:
            catalog.delete_workspace(workspace.name)
            raise
    return workspace


def attach_workspace(
    name: str,
    store_url: str,
    *,
    resource_group: str = settings.DEFAULT_RESOURCE_GROUP,
    region: str = settings.DEFAULT_REGION,
    artifact_root: str | Path | None = None,
) -> Workspace:
    """Register on this machine a workspace that another machine created in a shared store (PostgreSQL);
    its artifact root is the one recorded in the store, unless ``artifact_root`` says where this machine
    sees the same files.

    Raises:
        InvalidParameterError: the URL is malformed.
        WorkspaceNotFoundError: the store holds no workspace, or another one than ``name``.
        WorkspaceError: the artifact root is not reachable from this machine.
        AlreadyExistsError: a workspace has this name on this machine.
        SchemaVersionError: the store's schema is newer or older than this modelbuilder's.
    """
    check_workspace_name(name)
    found = read_workspace_properties(store_url, name)
    held = found.get(WORKSPACE_NAME)
    if held is None or held.lower() != name.lower():
        what = f"workspace '{held}'" if held else "no workspace"
        raise WorkspaceNotFoundError(
            f"The store {mask_url(store_url)} holds {what}, not '{name}'.",
            hint=(
                f"Attach '{held}' instead, or check the URL."
                if held
                else "Create a shared workspace in it first: "
                + hints.command("workspace", "create", name, store="URL", artifacts="DIR")
            ),
        )
    root = Path(artifact_root if artifact_root is not None else found[ARTIFACT_ROOT]).expanduser()
    if not root.is_dir():
        raise WorkspaceError(
            f"The artifact root of workspace '{held}', {root}, does not exist on this machine.",
            hint="Mount the shared folder there, or give the path where this machine sees it: "
            + hints.command("workspace", "attach", held, store="URL", artifacts="DIR"),
        )
    with Catalog() as catalog:
        workspace = catalog.create_workspace(held, resource_group, region, store_url, root)
        try:
            open_session(workspace).close()
        except BaseException:
            catalog.delete_workspace(workspace.name)
            raise
    logger.info("Attached workspace %s (%s)", held, mask_url(store_url))
    return workspace


def upgrade_workspace(name: str) -> tuple[str, str]:
    """Upgrade the store of a workspace to this modelbuilder's schema (a shared store is never upgraded
    behind its users' backs: this is how). Returns the revision before and after.

    Raises:
        WorkspaceNotFoundError: none has this name.
        SchemaVersionError: its store was written by a newer modelbuilder, or is not a workspace store.
    """
    workspace = get_workspace(name)
    previous = upgrade_store(workspace.store_url, workspace.name)
    return previous, STORE_SCHEMA.head


def get_workspace(name: str, *, catalog: CatalogSession | None = None) -> Workspace:
    """The workspace with this name.

    Raises:
        WorkspaceNotFoundError: none has this name.
    """
    with _catalog(catalog) as found:
        return found.get_workspace(name)


def find_workspace(name: str, *, catalog: CatalogSession | None = None) -> Workspace | None:
    """The workspace with this name, or None."""
    with _catalog(catalog) as found:
        return found.find_workspace(name)


def list_workspaces(
    resource_group: str | None = None, *, catalog: CatalogSession | None = None
) -> list[Workspace]:
    """Workspaces by name, all or those of one resource group."""
    with _catalog(catalog) as found:
        return found.list_workspaces(resource_group)


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
            hint=f"Create it with: {hints.command('workspace', 'create', wanted)}, or list workspaces with: "
            + hints.command("workspace", "list"),
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
            hint="Cancel them first: "
            + hints.command("run", "cancel", hints.short_id(active[0].id), workspace=workspace.name),
        )


def _remove_files(workspace: Workspace) -> None:
    """Remove this machine's files of a workspace; a given (shared) artifact root and a server store are
    left alone: other machines may use them."""
    folder = workspace_folder(workspace)
    try:
        default = default_workspace_folder(workspace.name, workspace.region)
    except ModelBuilderError:  # the region is no longer defined: remove nothing we cannot place
        return
    if folder != default:
        return
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("Removed the files of workspace %s at %s", workspace.name, folder)
