"""The machine's catalog of resource groups and workspaces (``$MODELBUILDER_HOME/catalog.db``).

A workspace is a metadata store (a SQLAlchemy URL) plus an artifact root; the catalog records where each
one lives, in which resource group and region. Names are unique on this machine regardless of case,
because a workspace's default files live in a folder named after it. The catalog records only: creating
the store's schema and removing a deleted workspace's files is the caller's job (``workspace_folder``
says which folder holds them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .. import hints, settings
from ..entities import ResourceGroup, Workspace
from ..errors import AlreadyExistsError, ResourceGroupNotFoundError, WorkspaceNotFoundError
from ..names import check_resource_group_name, check_workspace_name
from ._values import to_datetime
from .engine import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_RETRY_S,
    TransactionRunner,
    create_store_engine,
    describe_url,
    parse_url,
    sqlite_file_url,
)
from .schema import CATALOG_SCHEMA, ensure_schema, resource_groups, workspaces

logger = logging.getLogger(__name__)

WORKSPACE_DB_NAME = "workspace.db"
ARTIFACTS_DIR_NAME = "artifacts"


@dataclass(frozen=True, slots=True)
class ResourceGroupDeletion:
    """What ``delete_resource_group`` removed: the group and the workspaces it held."""

    resource_group: ResourceGroup
    workspaces: list[Workspace]


def catalog_path() -> Path:
    return settings.home() / "catalog.db"


def default_workspace_folder(name: str, region: str) -> Path:
    """Where a workspace's own files go by default: ``<region storage root>/<name>``."""
    return (settings.get_region(region).storage_root / name).expanduser().resolve()


def workspace_folder(workspace: Workspace) -> Path:
    """The folder of a workspace's files: its artifact root's parent (by default ``<region storage
    root>/<name>``, which also holds the SQLite file), where workers record themselves and checkpoints go.

    ``compute.job.RunFolders.of_job`` places a run's folders by the same rule. A shared artifact root's parent
    is therefore shared too: worker records of other hosts in it are judged by their heartbeats only (see
    ``WorkerRecord.on_this_host``), and deleting the workspace on one machine leaves it alone.
    """
    return Path(workspace.artifact_root).parent


def _resource_group(row: Any) -> ResourceGroup:
    return ResourceGroup(name=row.name, created_at=to_datetime(row.created_at))  # type: ignore[arg-type]


_WORKSPACE_COLUMNS = (*workspaces.c, resource_groups.c.name.label("resource_group_name"))
_WORKSPACE_SOURCE = workspaces.join(
    resource_groups, workspaces.c.resource_group_key == resource_groups.c.name_key
)


def _workspace(row: Any) -> Workspace:
    return Workspace(
        name=row.name,
        resource_group=row.resource_group_name,
        region=row.region,
        store_url=row.store_url,
        artifact_root=row.artifact_root,
        created_at=to_datetime(row.created_at),  # type: ignore[arg-type]
    )


class Catalog:
    """Resource groups and workspaces of this machine.

    Args:
        path: the catalog file (default ``$MODELBUILDER_HOME/catalog.db``).
        busy_timeout_s, retry_s: lock handling, as for ``SqlAlchemyStore``.
        clock: seconds since the epoch.

    Raises:
        SchemaVersionError: the catalog was written by a newer modelbuilder.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        retry_s: float = DEFAULT_RETRY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path) if path is not None else catalog_path()
        self._clock = clock
        url = sqlite_file_url(self.path)
        self._tx = TransactionRunner(
            create_store_engine(url, busy_timeout_s=busy_timeout_s),
            retry_s=retry_s,
            what=f"catalog {self.path}",
        )
        try:
            ensure_schema(self._tx, CATALOG_SCHEMA, f"catalog {self.path}")
        except BaseException:
            self._tx.dispose()
            raise

    def close(self) -> None:
        self._tx.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- resource groups --------------------------------------------------------------------------

    def _find_group(self, conn: Connection, name: str) -> ResourceGroup | None:
        row = conn.execute(
            sa.select(resource_groups).where(resource_groups.c.name_key == name.lower())
        ).first()
        return None if row is None else _resource_group(row)

    def _insert_group(self, conn: Connection, name: str) -> ResourceGroup:
        conn.execute(
            sa.insert(resource_groups).values(name_key=name.lower(), name=name, created_at=self._clock())
        )
        created = self._find_group(conn, name)
        assert created is not None
        return created

    def create_resource_group(self, name: str) -> ResourceGroup:
        """Create an empty resource group.

        Raises:
            InvalidNameError: the name breaks the resource group name rule.
            AlreadyExistsError: a resource group has this name (in any case).
        """
        check_resource_group_name(name)

        def create(conn: Connection) -> ResourceGroup:
            existing = self._find_group(conn, name)
            if existing is not None:
                raise AlreadyExistsError(
                    f"Resource group '{existing.name}' already exists.",
                    hint="Use it as it is, or choose another name.",
                )
            return self._insert_group(conn, name)

        return self._tx.write(create)

    def get_or_create_resource_group(self, name: str) -> ResourceGroup:
        """The resource group with this name, created if needed.

        Raises:
            InvalidNameError: the name breaks the resource group name rule.
        """
        check_resource_group_name(name)
        return self._tx.write(lambda conn: self._find_group(conn, name) or self._insert_group(conn, name))

    def find_resource_group(self, name: str) -> ResourceGroup | None:
        return self._tx.read(lambda conn: self._find_group(conn, name))

    def get_resource_group(self, name: str) -> ResourceGroup:
        """The resource group with this name.

        Raises:
            ResourceGroupNotFoundError: none has this name.
        """
        found = self.find_resource_group(name)
        if found is None:
            raise ResourceGroupNotFoundError(
                f"Resource group '{name}' not found.",
                hint="List resource groups with: " + hints.command("resource-group", "list"),
            )
        return found

    def list_resource_groups(self) -> list[ResourceGroup]:
        rows = self._tx.read(
            lambda conn: conn.execute(sa.select(resource_groups).order_by(resource_groups.c.name_key)).all()
        )
        return [_resource_group(row) for row in rows]

    def delete_resource_group(self, name: str) -> ResourceGroupDeletion:
        """Delete a resource group and the catalog entries of all its workspaces.

        Returns what was deleted, so the caller can remove the workspaces' files.

        Raises:
            ResourceGroupNotFoundError: none has this name.
        """

        def delete(conn: Connection) -> ResourceGroupDeletion:
            group = self._find_group(conn, name)
            if group is None:
                raise ResourceGroupNotFoundError(
                    f"Resource group '{name}' not found.",
                    hint="List resource groups with: " + hints.command("resource-group", "list"),
                )
            key = name.lower()
            held = [
                _workspace(row)
                for row in conn.execute(
                    sa.select(*_WORKSPACE_COLUMNS)
                    .select_from(_WORKSPACE_SOURCE)
                    .where(workspaces.c.resource_group_key == key)
                    .order_by(workspaces.c.name_key)
                )
            ]
            # Explicit, so it holds on databases where ON DELETE CASCADE is switched off.
            conn.execute(sa.delete(workspaces).where(workspaces.c.resource_group_key == key))
            conn.execute(sa.delete(resource_groups).where(resource_groups.c.name_key == key))
            return ResourceGroupDeletion(group, held)

        deletion = self._tx.write(delete)
        logger.info(
            "Deleted resource group %s with %d workspace(s)",
            deletion.resource_group.name,
            len(deletion.workspaces),
        )
        return deletion

    # --- workspaces -------------------------------------------------------------------------------

    def create_workspace(
        self,
        name: str,
        resource_group: str = settings.DEFAULT_RESOURCE_GROUP,
        region: str = settings.DEFAULT_REGION,
        store_url: str | None = None,
        artifact_root: str | Path | None = None,
    ) -> Workspace:
        """Record a new workspace; its resource group is created on first use.

        The default store is ``sqlite:///<region storage root>/<name>/workspace.db`` and the default artifact
        root ``<region storage root>/<name>/artifacts``.

        Raises:
            InvalidNameError: the workspace or resource group name breaks its rule.
            NotFoundError: the region is not defined.
            InvalidParameterError: the store URL is malformed.
            AlreadyExistsError: a workspace has this name (in any case) on this machine.
        """
        check_workspace_name(name)
        check_resource_group_name(resource_group)
        location = settings.get_region(region)
        folder = default_workspace_folder(name, location.name)
        url = store_url if store_url is not None else sqlite_file_url(folder / WORKSPACE_DB_NAME)
        parse_url(url)
        root = (
            Path(artifact_root).expanduser().resolve()
            if artifact_root is not None
            else folder / ARTIFACTS_DIR_NAME
        )

        def create(conn: Connection) -> Workspace:
            existing = self._find_workspace(conn, name)
            if existing is not None:
                raise AlreadyExistsError(
                    f"Workspace '{existing.name}' already exists "
                    f"(resource group '{existing.resource_group}', region '{existing.region}').",
                    hint=f"Use it with --workspace {existing.name}, choose another name, or delete it first: "
                    + hints.command("workspace", "delete", existing.name),
                )
            group = self._find_group(conn, resource_group) or self._insert_group(conn, resource_group)
            conn.execute(
                sa.insert(workspaces).values(
                    name_key=name.lower(),
                    name=name,
                    resource_group_key=group.name.lower(),
                    region=location.name,
                    store_url=url,
                    artifact_root=str(root),
                    created_at=self._clock(),
                )
            )
            created = self._find_workspace(conn, name)
            assert created is not None
            return created

        try:
            workspace = self._tx.write(create)
        except IntegrityError:  # pragma: no cover - only with a second writer outside BEGIN IMMEDIATE
            return self.get_workspace(name)
        logger.info("Created workspace %s (%s)", name, describe_url(parse_url(url)))
        return workspace

    def _find_workspace(self, conn: Connection, name: str) -> Workspace | None:
        row = conn.execute(
            sa.select(*_WORKSPACE_COLUMNS)
            .select_from(_WORKSPACE_SOURCE)
            .where(workspaces.c.name_key == name.lower())
        ).first()
        return None if row is None else _workspace(row)

    def find_workspace(self, name: str) -> Workspace | None:
        return self._tx.read(lambda conn: self._find_workspace(conn, name))

    def get_workspace(self, name: str) -> Workspace:
        """The workspace with this name (in any case).

        Raises:
            WorkspaceNotFoundError: none has this name.
        """
        found = self.find_workspace(name)
        if found is None:
            raise WorkspaceNotFoundError(
                f"Workspace '{name}' not found on this machine.",
                hint=f"Create it with: {hints.command('workspace', 'create', name)}, or list workspaces "
                "with: " + hints.command("workspace", "list"),
            )
        return found

    def list_workspaces(self, resource_group: str | None = None) -> list[Workspace]:
        """Workspaces by name, all or those of one resource group."""
        query = sa.select(*_WORKSPACE_COLUMNS).select_from(_WORKSPACE_SOURCE).order_by(workspaces.c.name_key)
        if resource_group is not None:
            query = query.where(workspaces.c.resource_group_key == resource_group.lower())
        return [_workspace(row) for row in self._tx.read(lambda conn: conn.execute(query).all())]

    def delete_workspace(self, name: str) -> Workspace:
        """Remove a workspace from the catalog and return it (its files are the caller's to remove).

        Raises:
            WorkspaceNotFoundError: none has this name.
        """

        def delete(conn: Connection) -> Workspace:
            found = self._find_workspace(conn, name)
            if found is None:
                raise WorkspaceNotFoundError(
                    f"Workspace '{name}' not found on this machine.",
                    hint="List workspaces with: " + hints.command("workspace", "list"),
                )
            conn.execute(sa.delete(workspaces).where(workspaces.c.name_key == name.lower()))
            return found

        return self._tx.write(delete)
