"""SQLite settings, BEGIN IMMEDIATE for writes, lock retries, and what PostgreSQL would get."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from modelbuilder.entities import RunStatus
from modelbuilder.errors import MissingDependencyError, WorkspaceBusyError, WorkspaceError
from modelbuilder.store import MetadataStore, SqlAlchemyStore, open_store, register_store, sqlite_file_url
from modelbuilder.store.engine import create_store_engine, is_lock_error
from modelbuilder.store.schema import CATALOG_METADATA, STORE_METADATA


def _running_store(path: Path, **kwargs: Any) -> tuple[SqlAlchemyStore, str]:
    store = SqlAlchemyStore(sqlite_file_url(path), workspace="locks", **kwargs)
    run = store.create_run(store.get_or_create_experiment("locks").id, status=RunStatus.RUNNING)
    return store, run.id


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    store, _ = _running_store(tmp_path / "ws.db", busy_timeout_s=12.5)
    engine = store._tx.engine
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 12500
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.close()


def test_writes_begin_immediate_and_reads_do_not(tmp_path: Path) -> None:
    store, run_id = _running_store(tmp_path / "ws.db")
    statements: list[str] = []
    sa.event.listen(store._tx.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    store.log_metric(run_id, "acc", 0.5)
    assert statements[0] == "BEGIN IMMEDIATE"
    statements.clear()
    store.get_run(run_id)
    assert statements[0] == "BEGIN"
    store.close()


def test_a_lock_that_outlasts_the_retries_becomes_workspace_busy(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    store, run_id = _running_store(path, busy_timeout_s=0.05, retry_s=0.4)
    holder = _hold_write_lock(path)
    try:
        started = time.monotonic()
        with pytest.raises(WorkspaceBusyError) as info:
            store.log_metric(run_id, "acc", 0.5)
        assert time.monotonic() - started >= 0.4
        assert "workspace 'locks'" in str(info.value) and "locked" in str(info.value)
        assert info.value.hint and "try again" in info.value.hint
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)
        assert store.get_run(run_id).status is RunStatus.RUNNING  # WAL: readers are not blocked
    finally:
        holder.rollback()
        holder.close()
    store.log_metric(run_id, "acc", 0.5)
    assert len(store.get_metric_history(run_id, "acc")) == 1
    store.close()


def test_a_passing_lock_is_retried_transparently(tmp_path: Path) -> None:
    path = tmp_path / "ws.db"
    # A tiny busy timeout makes SQLite give up at once, so our retry loop is what waits.
    store, run_id = _running_store(path, busy_timeout_s=0.01, retry_s=20)
    holder = _hold_write_lock(path)
    releaser = threading.Timer(0.5, lambda: (holder.execute("COMMIT"), holder.close()))
    releaser.start()
    started = time.monotonic()
    store.log_metrics(run_id, [("acc", float(i), i, None) for i in range(5)])
    assert time.monotonic() - started >= 0.4
    releaser.join()
    assert len(store.get_metric_history(run_id, "acc")) == 5
    store.close()


def test_other_database_failures_are_workspace_errors(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(WorkspaceError, match="unable to open"):
        SqlAlchemyStore(sqlite_file_url(folder))


def test_is_lock_error() -> None:
    locked = sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    other = sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("no such table: x"))
    assert is_lock_error(locked) and not is_lock_error(other) and not is_lock_error(ValueError("locked"))


def test_open_store_picks_the_implementation_by_scheme(tmp_path: Path) -> None:
    with open_store(sqlite_file_url(tmp_path / "ws.db"), "ws") as store:
        assert isinstance(store, SqlAlchemyStore) and store.workspace == "ws"
    opened: list[str] = []

    def fake(url: str, workspace: str) -> MetadataStore:
        opened.append(url)
        return SqlAlchemyStore("sqlite://", workspace=workspace)

    register_store("mysql", fake)
    try:
        open_store("mysql://u@host/db", "ws").close()
    finally:
        from modelbuilder.store import _FACTORIES

        _FACTORIES.pop("mysql")
    assert opened == ["mysql://u@host/db"]


def test_postgresql_urls_get_a_plain_engine_or_a_driver_hint() -> None:
    try:
        engine = create_store_engine("postgresql://mb@127.0.0.1:1/mb")
    except MissingDependencyError as exc:
        assert "psycopg" in (exc.hint or "")
    else:
        assert engine.dialect.name == "postgresql"
        assert len(engine.dispatch.begin) == 0  # the SQLite hooks are for SQLite only
        engine.dispose()


@pytest.mark.parametrize("metadata", [STORE_METADATA, CATALOG_METADATA], ids=["store", "catalog"])
def test_schema_compiles_for_postgresql(metadata: sa.MetaData) -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    for table in metadata.sorted_tables:
        assert f"CREATE TABLE {table.name}" in str(CreateTable(table).compile(dialect=dialect))
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=dialect))
    metrics = STORE_METADATA.tables["metrics"]
    assert "BIGSERIAL" in str(CreateTable(metrics).compile(dialect=dialect))
