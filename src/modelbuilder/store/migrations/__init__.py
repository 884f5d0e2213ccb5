"""Schema migrations of modelbuilder's databases, with Alembic.

Every schema change is a revision file: ``workspace/`` for workspace stores, ``catalog/`` for the machine's
catalog (``env.py`` is shared). A revision is frozen once released; ``tests/store/test_migrations.py``
checks that the newest revision (the *head*) builds exactly the tables of ``schema.py``.

Opening a database (``ensure_schema``):

- empty: every revision is applied;
- at the head: nothing to do (one small query);
- older: a SQLite file is copied next to itself first (``workspace.db.backup-<old revision>``) and then
  upgraded; a server database (PostgreSQL) is shared by a team, so it is upgraded only on request
  (``upgrade=True``, from ``modelbuilder workspace upgrade NAME``) and otherwise refused with that command;
- written by a newer modelbuilder (a revision this one does not know), or tables that are not ours:
  ``SchemaVersionError``.

Databases written before Alembic carry a ``schema_version`` table at version 1, which is the baseline
revision: its table is replaced by Alembic's ``alembic_version`` in the same transaction as the upgrade.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from ...errors import SchemaVersionError
from ...hints import command as cli_command
from ..engine import TransactionRunner, is_memory_sqlite

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"
#: The version table of databases written before Alembic (one row; version 1 is the baseline revision).
LEGACY_VERSION_TABLE = "schema_version"
LEGACY_VERSION = 1
#: Key of the PostgreSQL advisory lock that serialises schema changes of one database.
_ADVISORY_LOCK_KEY = 0x6D62_5343  # "mbSC"
#: Alembic's ``context`` and ``op`` are one global per process: two threads must not migrate at once (say,
#: the portal opening a new workspace while it upgrades the catalog).
_ALEMBIC_TURNS = threading.Lock()


@dataclass(frozen=True)
class SchemaSpec:
    """One kind of database: its tables (``metadata``) and the folder of its revisions."""

    kind: str
    metadata: sa.MetaData
    folder: str

    def config(self, conn: Connection | None = None) -> Config:
        """The Alembic configuration that runs this kind's revisions on ``conn``."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", str(MIGRATIONS_DIR / self.folder))
        config.attributes["connection"] = conn
        config.attributes["metadata"] = self.metadata
        return config

    @cached_property
    def script(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.config())

    @cached_property
    def head(self) -> str:
        """The newest revision: what ``schema.py`` describes."""
        head = self.script.get_current_head()
        assert head is not None, f"no revisions in {self.folder}"
        return head

    @cached_property
    def baseline(self) -> str:
        bases = self.script.get_bases()
        assert len(bases) == 1, f"{self.folder} must have one baseline revision, has {bases}"
        return bases[0]

    @cached_property
    def revisions(self) -> frozenset[str]:
        return frozenset(script.revision for script in self.script.walk_revisions())


@dataclass(frozen=True)
class SchemaState:
    """What an opened database holds: ``revision`` None means empty; ``legacy`` a pre-Alembic database."""

    revision: str | None
    legacy: bool = False


def read_revision(conn: Connection, spec: SchemaSpec, where: str) -> SchemaState:
    """The schema revision of the database.

    Raises:
        SchemaVersionError: the database holds tables but no version (not ours), or a newer revision.
    """
    inspector = sa.inspect(conn)
    if inspector.has_table(VERSION_TABLE):
        found = MigrationContext.configure(conn).get_current_revision()
        if found is not None and found not in spec.revisions:
            raise _newer(spec, where, found)
        return SchemaState(found)
    if inspector.has_table(LEGACY_VERSION_TABLE):
        version = conn.execute(sa.text(f"SELECT MAX(version) FROM {LEGACY_VERSION_TABLE}")).scalar()
        if int(version or 0) > LEGACY_VERSION:
            raise _newer(spec, where, f"version {version}")
        return SchemaState(spec.baseline, legacy=True)
    foreign = [name for name in inspector.get_table_names() if not name.startswith("sqlite_")]
    if foreign:
        raise SchemaVersionError(
            f"The database of {where} has tables ({', '.join(sorted(foreign)[:5])}) but no schema version: "
            f"it is not a modelbuilder {spec.kind}.",
            hint="Point modelbuilder at an empty database or at one it created.",
        )
    return SchemaState(None)


def _newer(spec: SchemaSpec, where: str, found: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"The database of {where} has {spec.kind} schema revision {found}, which this modelbuilder does not "
        f"know (its newest is {spec.head}): a newer modelbuilder wrote it.",
        hint="Upgrade modelbuilder (pip install -U modelbuilder) to open it.",
    )


def ensure_schema(
    runner: TransactionRunner,
    spec: SchemaSpec,
    where: str,
    *,
    workspace: str | None = None,
    upgrade: bool = False,
) -> str:
    """Bring the database to ``spec.head`` where allowed (see the module doc) and return the revision it had
    when opened ("" when it was empty).

    Args:
        workspace: the workspace's name, for the upgrade command in the refusal's hint.
        upgrade: also upgrade a server database (SQLite databases are always upgraded).

    Raises:
        SchemaVersionError: not ours, newer, or an older server database without ``upgrade``.
    """
    state = runner.read(lambda conn: read_revision(conn, spec, where))
    if state.revision == spec.head and not state.legacy:
        return state.revision
    url = runner.engine.url
    if state.revision is not None and url.get_backend_name() != "sqlite" and not upgrade:
        name = workspace or "NAME"
        raise SchemaVersionError(
            f"The database of {where} has {spec.kind} schema revision {state.revision}, older than revision "
            f"{spec.head} of this modelbuilder; it is shared, so it is not upgraded behind its users' backs.",
            hint="Upgrade it once (everyone then needs this modelbuilder version or newer): "
            + cli_command("workspace", "upgrade", name),
        )
    if state.revision is not None and not is_memory_sqlite(url) and url.get_backend_name() == "sqlite":
        assert url.database is not None
        _backup_sqlite(Path(url.database), state.revision)

    def migrate(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":  # two processes opening one new database: one creates it
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        current = read_revision(conn, spec, where)  # again: another process may have migrated meanwhile
        if current.revision == spec.head and not current.legacy:
            return
        config = spec.config(conn)
        logger.info(
            "Upgrading the %s of %s from revision %s to %s",
            spec.kind,
            where,
            current.revision or "(empty)",
            spec.head,
        )
        with _ALEMBIC_TURNS:
            if current.legacy:
                conn.execute(sa.text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))
                command.stamp(config, spec.baseline)
            command.upgrade(config, spec.head)

    runner.write(migrate)
    return state.revision or ""


def backup_path(database: Path, revision: str) -> Path:
    """Where the copy of a SQLite database is kept before it is upgraded from ``revision``."""
    return database.with_name(f"{database.name}.backup-{revision}")


def _backup_sqlite(database: Path, revision: str) -> Path:
    """Copy a SQLite database (WAL content included, consistently) next to itself."""
    target = backup_path(database, revision)
    partial = target.with_name(target.name + ".partial")
    source = sqlite3.connect(database)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    os.replace(partial, target)
    logger.warning("Backed up %s to %s before upgrading its schema", database, target)
    return target


def compare_with_metadata(conn: Connection, spec: SchemaSpec) -> list[object]:
    """Differences between the database's tables and ``spec.metadata`` (empty when they match)."""
    from alembic.autogenerate import compare_metadata

    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, spec.metadata))
