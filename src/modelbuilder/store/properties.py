"""What a workspace store records about its own workspace (its name and its artifact root), and its
upgrade on request.

A shared workspace is one store URL plus one artifact root. The catalog of each machine records both, but a
second machine knows only the URL: ``workspace attach NAME --store URL`` reads the rest from here.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import TransactionRunner, create_store_engine, describe_url, parse_url
from .schema import STORE_SCHEMA, ensure_schema, workspace_properties

WORKSPACE_NAME = "workspace_name"
ARTIFACT_ROOT = "artifact_root"


def _runner(url: str, workspace: str | None, *, upgrade: bool = False) -> tuple[TransactionRunner, str]:
    where = f"workspace '{workspace}'" if workspace else f"store {describe_url(parse_url(url))}"
    runner = TransactionRunner(create_store_engine(url), what=where)
    try:
        previous = ensure_schema(runner, STORE_SCHEMA, where, workspace=workspace, upgrade=upgrade)
    except BaseException:
        runner.dispose()
        raise
    return runner, previous


def upgrade_store(url: str, workspace: str | None = None) -> str:
    """Upgrade the store at ``url`` to this modelbuilder's schema, also a shared (server) one; return the
    revision it had ("" when it was empty).

    Raises:
        SchemaVersionError: it is not a workspace store, or a newer modelbuilder wrote it.
    """
    runner, previous = _runner(url, workspace, upgrade=True)
    runner.dispose()
    return previous


def read_workspace_properties(url: str, workspace: str | None = None) -> dict[str, str]:
    """The properties recorded in the store at ``url`` (empty when none: an older or unclaimed store).

    Raises:
        InvalidParameterError: the URL is malformed.
        MissingDependencyError: its database driver is missing.
        SchemaVersionError / WorkspaceError: the database cannot be used as it is.
    """
    runner, _ = _runner(url, workspace)
    try:
        rows = runner.read(lambda conn: conn.execute(sa.select(workspace_properties)).all())
    finally:
        runner.dispose()
    return {row.key: row.value for row in rows}


def claim_store(url: str, workspace: str, artifact_root: str) -> dict[str, str] | None:
    """Record ``workspace`` and its artifact root in the store at ``url``, unless it already belongs to a
    workspace: then return that workspace's properties (None when the claim succeeded)."""

    def claim(conn: Connection) -> dict[str, str] | None:
        found = {row.key: row.value for row in conn.execute(sa.select(workspace_properties))}
        if WORKSPACE_NAME in found:
            return found
        now = time.time()
        wanted = {WORKSPACE_NAME: workspace, ARTIFACT_ROOT: artifact_root}
        conn.execute(
            sa.insert(workspace_properties),
            [{"key": key, "value": value, "updated_at": now} for key, value in wanted.items()],
        )
        return None

    runner, _ = _runner(url, workspace)
    try:
        return runner.write(claim)
    finally:
        runner.dispose()
