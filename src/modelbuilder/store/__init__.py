"""Metadata stores of workspaces, and the machine's catalog of resource groups and workspaces.

``open_store(url)`` picks the implementation from the URL scheme (MLflow's store registry): every
SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``) opens a ``SqlAlchemyStore``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..entities import Workspace
from .base import (
    COMPUTE_TRANSITIONS,
    DEFAULT_RUN_ORDER,
    RUN_ORDER_FIELDS,
    WORKER_STATUSES,
    MetadataStore,
    MetricInput,
    ParentFilter,
    check_compute_transition,
)
from .catalog import Catalog, ResourceGroupDeletion, catalog_path, default_workspace_folder, workspace_folder
from .engine import is_sqlite, mask_url, parse_url, sqlite_file_url
from .properties import claim_store, read_workspace_properties, upgrade_store
from .schema import CATALOG_SCHEMA, STORE_SCHEMA
from .sql import SqlAlchemyStore

StoreFactory = Callable[[str, str], MetadataStore]

_FACTORIES: dict[str, StoreFactory] = {}


def register_store(scheme: str, factory: StoreFactory) -> None:
    """Make ``open_store`` use ``factory(url, workspace)`` for URLs whose backend name is ``scheme``."""
    _FACTORIES[scheme] = factory


def _sqlalchemy_factory(url: str, workspace: str) -> MetadataStore:
    return SqlAlchemyStore(url, workspace=workspace)


def open_store(url: str, workspace: str = "") -> MetadataStore:
    """Open the metadata store at ``url`` (creating or migrating its schema).

    Raises:
        InvalidParameterError: the URL is malformed.
        SchemaVersionError: the database was written by a newer modelbuilder, or is a shared (server)
            database with an older schema (upgrade it with ``upgrade_store``).
    """
    backend = parse_url(url).get_backend_name()
    return _FACTORIES.get(backend, _sqlalchemy_factory)(url, workspace)


def open_workspace_store(workspace: Workspace) -> MetadataStore:
    """Open the metadata store of a catalog workspace."""
    return open_store(workspace.store_url, workspace.name)


__all__ = [
    "CATALOG_SCHEMA",
    "COMPUTE_TRANSITIONS",
    "Catalog",
    "DEFAULT_RUN_ORDER",
    "MetadataStore",
    "MetricInput",
    "ParentFilter",
    "RUN_ORDER_FIELDS",
    "ResourceGroupDeletion",
    "STORE_SCHEMA",
    "SqlAlchemyStore",
    "WORKER_STATUSES",
    "catalog_path",
    "check_compute_transition",
    "claim_store",
    "default_workspace_folder",
    "is_sqlite",
    "mask_url",
    "open_store",
    "open_workspace_store",
    "read_workspace_properties",
    "register_store",
    "sqlite_file_url",
    "upgrade_store",
    "workspace_folder",
]
