"""Tables of the workspace store and of the catalog, their schema version, and the migrations.

Every database we write carries a ``schema_version`` table with one row. Opening a database:

- empty: the migrations are applied in order, from version 0 to ``SchemaSpec.version``;
- older version: the missing migrations are applied, in one write transaction each;
- same version: nothing to do;
- newer version, or tables without a ``schema_version`` (not ours): ``SchemaVersionError``.

Migration ``i`` takes a database from version ``i`` to ``i + 1``. Version 1 creates the tables below; when a
version 2 changes them, freeze version 1's definitions in its migration first.

Timestamps are stored as seconds since the epoch (double precision) so that SQLite and PostgreSQL order
and compare them the same way; NaN metric values are stored as NULL (SQLite cannot store NaN).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import SchemaVersionError
from .engine import TransactionRunner

logger = logging.getLogger(__name__)

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: An integer primary key that autoincrements on SQLite (INTEGER PRIMARY KEY) and is 64-bit elsewhere.
_AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _version_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "schema_version",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


# --- workspace store --------------------------------------------------------------------------------

STORE_METADATA = sa.MetaData(naming_convention=_NAMING)
store_version = _version_table(STORE_METADATA)

experiments = sa.Table(
    "experiments",
    STORE_METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Double, nullable=False),
)

runs = sa.Table(
    "runs",
    STORE_METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    # Per-workspace creation order: a stable tie-breaker for pagination.
    sa.Column("number", sa.BigInteger, nullable=False, unique=True),
    sa.Column(
        "experiment_id", sa.String(32), sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("parent_run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=True),
    sa.Column("name", sa.String(250), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("compute", sa.String(64), nullable=True),
    sa.Column("dataset_fingerprint", sa.String(128), nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("ended_at", sa.Double, nullable=True),
    sa.Column("heartbeat_at", sa.Double, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("phase", sa.String(250), nullable=True),
    sa.Column("log_line_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index(None, "experiment_id", "number"),
    sa.Index(None, "parent_run_id", "number"),
    sa.Index(None, "status"),
)

params = sa.Table(
    "params",
    STORE_METADATA,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),  # JSON
)

metrics = sa.Table(
    "metrics",
    STORE_METADATA,
    sa.Column("id", _AutoId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("value", sa.Double, nullable=True),  # NULL is NaN
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.Double, nullable=False),
    sa.Index(None, "run_id", "key", "step"),
)

latest_metrics = sa.Table(
    "latest_metrics",
    STORE_METADATA,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.Double, nullable=False),
)

log_lines = sa.Table(
    "log_lines",
    STORE_METADATA,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.BigInteger, primary_key=True),
    sa.Column("timestamp", sa.Double, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)

artifacts = sa.Table(
    "artifacts",
    STORE_METADATA,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

computes = sa.Table(
    "computes",
    STORE_METADATA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("size", sa.String(64), nullable=False),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("min_nodes", sa.Integer, nullable=False),
    sa.Column("max_nodes", sa.Integer, nullable=False),
    sa.Column("idle_seconds_before_scaledown", sa.Integer, nullable=False),
    sa.Column("address", sa.String(500), nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# --- catalog of resource groups and workspaces -----------------------------------------------------

CATALOG_METADATA = sa.MetaData(naming_convention=_NAMING)
catalog_version = _version_table(CATALOG_METADATA)

resource_groups = sa.Table(
    "resource_groups",
    CATALOG_METADATA,
    # name_key is the lower-cased name: names are unique regardless of case (folders may be case-blind).
    sa.Column("name_key", sa.String(90), primary_key=True),
    sa.Column("name", sa.String(90), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

workspaces = sa.Table(
    "workspaces",
    CATALOG_METADATA,
    sa.Column("name_key", sa.String(33), primary_key=True),
    sa.Column("name", sa.String(33), nullable=False),
    sa.Column(
        "resource_group_key",
        sa.String(90),
        sa.ForeignKey("resource_groups.name_key", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("store_url", sa.Text, nullable=False),
    sa.Column("artifact_root", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)


# --- versions and migrations -------------------------------------------------------------------------

Migration = Callable[[Connection], None]


@dataclass(frozen=True)
class SchemaSpec:
    """What a database of one kind must look like: its tables and the migrations that build them."""

    kind: str
    metadata: sa.MetaData
    version_table: sa.Table
    migrations: Sequence[Migration]

    @property
    def version(self) -> int:
        return len(self.migrations)


def _create_store_v1(conn: Connection) -> None:
    STORE_METADATA.create_all(conn)


def _create_catalog_v1(conn: Connection) -> None:
    CATALOG_METADATA.create_all(conn)


STORE_SCHEMA = SchemaSpec("workspace store", STORE_METADATA, store_version, (_create_store_v1,))
CATALOG_SCHEMA = SchemaSpec("catalog", CATALOG_METADATA, catalog_version, (_create_catalog_v1,))


def read_version(conn: Connection, spec: SchemaSpec, where: str) -> int:
    """The schema version of the database (0 when empty).

    Raises:
        SchemaVersionError: the database holds tables but no version (not ours), or a newer version.
    """
    inspector = sa.inspect(conn)
    if not inspector.has_table(spec.version_table.name):
        foreign = [name for name in inspector.get_table_names() if not name.startswith("sqlite_")]
        if foreign:
            raise SchemaVersionError(
                f"The database of {where} has tables ({', '.join(sorted(foreign)[:5])}) but no "
                "schema_version table: it is not a modelbuilder "
                f"{spec.kind}.",
                hint="Point modelbuilder at an empty database or at one it created.",
            )
        return 0
    version = conn.execute(sa.select(sa.func.max(spec.version_table.c.version))).scalar()
    found = int(version or 0)
    if found > spec.version:
        raise SchemaVersionError(
            f"The database of {where} has {spec.kind} schema version {found}, newer than version "
            f"{spec.version} that this modelbuilder understands.",
            hint="Upgrade modelbuilder (pip install -U modelbuilder) to open it.",
        )
    return found


def ensure_schema(runner: TransactionRunner, spec: SchemaSpec, where: str) -> int:
    """Bring the database up to ``spec.version`` and return the version it had when opened.

    Raises:
        SchemaVersionError: see ``read_version``.
    """
    found = runner.read(lambda conn: read_version(conn, spec, where))
    if found == spec.version:
        return found

    def migrate(conn: Connection) -> int:
        # Re-read inside the write transaction: another process may have migrated meanwhile.
        current = read_version(conn, spec, where)
        for index in range(current, spec.version):
            logger.info("Migrating %s of %s from version %d to %d", spec.kind, where, index, index + 1)
            spec.migrations[index](conn)
        table = spec.version_table
        conn.execute(sa.delete(table))
        conn.execute(sa.insert(table).values(id=1, version=spec.version, updated_at=time.time()))
        return current

    runner.write(migrate)
    return found


def set_version(runner: TransactionRunner, spec: SchemaSpec, version: int) -> None:
    """Overwrite the recorded schema version (for tests and repair tools)."""

    def write(conn: Connection) -> None:
        conn.execute(sa.delete(spec.version_table))
        conn.execute(sa.insert(spec.version_table).values(id=1, version=version, updated_at=time.time()))

    runner.write(write)
