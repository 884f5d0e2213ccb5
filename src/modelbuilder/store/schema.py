"""Tables of the workspace store and of the catalog.

These definitions are what the code reads and writes; the Alembic revisions in ``migrations/`` are what
builds them in a database. Every change here needs a new revision there (the newest revision must build
exactly these tables: ``tests/store/test_migrations.py`` compares them), see ``migrations/__init__.py``.

Timestamps are stored as seconds since the epoch (double precision) so that SQLite and PostgreSQL order
and compare them the same way; NaN metric values are stored as NULL (SQLite cannot store NaN).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .migrations import SchemaSpec as SchemaSpec
from .migrations import ensure_schema as ensure_schema
from .migrations import read_revision

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: An integer primary key that autoincrements on SQLite (INTEGER PRIMARY KEY) and is 64-bit elsewhere.
_AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


# --- workspace store --------------------------------------------------------------------------------

STORE_METADATA = sa.MetaData(naming_convention=_NAMING)

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
    sa.Column("error_type", sa.String(100), nullable=True),
    sa.Column("error_hint", sa.Text, nullable=True),
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
    # The NAME of the environment variable that holds the cluster's token, never the token itself (last:
    # added by revision 0004, as the upgraded tables have it).
    sa.Column("token_ref", sa.String(64), nullable=True),
)

#: What the store knows about its own workspace (keys in ``catalog.WORKSPACE_PROPERTIES``), so another
#: machine can attach to it from the store URL alone.
workspace_properties = sa.Table(
    "workspace_properties",
    STORE_METADATA,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# --- catalog of resource groups and workspaces -----------------------------------------------------

CATALOG_METADATA = sa.MetaData(naming_convention=_NAMING)

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


# --- schema specs: what each kind of database must look like -------------------------------------

STORE_SCHEMA = SchemaSpec("workspace store", STORE_METADATA, "workspace")
CATALOG_SCHEMA = SchemaSpec("catalog", CATALOG_METADATA, "catalog")


def read_version(conn: Connection, spec: SchemaSpec, where: str) -> str:
    """The schema revision of the database ("" when empty).

    Raises:
        SchemaVersionError: not a modelbuilder database, or one written by a newer modelbuilder.
    """
    return read_revision(conn, spec, where).revision or ""
