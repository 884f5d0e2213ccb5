"""Alembic migrations: the head builds exactly schema.py's tables, older workspaces are upgraded (SQLite,
after a backup) or refused with the upgrade command (PostgreSQL), newer ones are refused."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from modelbuilder.errors import SchemaVersionError
from modelbuilder.store import (
    CATALOG_SCHEMA,
    STORE_SCHEMA,
    Catalog,
    SqlAlchemyStore,
    sqlite_file_url,
    upgrade_store,
)
from modelbuilder.store.engine import create_store_engine
from modelbuilder.store.migrations import backup_path, compare_with_metadata

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY_RUN = "b109cfd85ac64b6d9278e20397b08a73"


def _tables(url: str) -> set[str]:
    engine = create_store_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str, spec: object) -> list[object]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return compare_with_metadata(conn, spec)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_the_head_builds_exactly_the_tables_of_schema_py(
    store_backend: str, store_url: str | None, tmp_path: Path
) -> None:
    url = store_url or sqlite_file_url(tmp_path / "workspace.db")
    SqlAlchemyStore(url).close()
    assert _diff(url, STORE_SCHEMA) == []
    assert "schema_version" not in _tables(url)


def test_the_catalog_head_builds_exactly_its_tables(tmp_path: Path) -> None:
    from modelbuilder.store import Catalog

    Catalog(tmp_path / "catalog.db").close()
    assert _diff(sqlite_file_url(tmp_path / "catalog.db"), CATALOG_SCHEMA) == []


def test_a_workspace_file_of_the_old_schema_is_backed_up_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "legacy" / "workspace.db"
    path.parent.mkdir()
    shutil.copy(FIXTURES / "workspace-v1.db", path)
    with SqlAlchemyStore(sqlite_file_url(path), workspace="legacy") as store:
        assert store.schema_version == STORE_SCHEMA.head
        run = store.get_run(LEGACY_RUN)
        assert run.status.value == "NotStarted"
        assert [m.value for m in store.get_metric_history(run.id, "acc")] == [0.5]
        assert store.count_log_lines(run.id) == 1
        assert store.get_experiment("old-exp").id == run.experiment_id
        assert [c.name for c in store.list_computes()] == ["local"]
    assert _diff(sqlite_file_url(path), STORE_SCHEMA) == []
    assert "schema_version" not in _tables(sqlite_file_url(path))
    # The copy taken before the upgrade is the old file, named with its revision (the baseline, 0001).
    backup = backup_path(path, STORE_SCHEMA.baseline)
    assert backup.name == "workspace.db.backup-0001"
    with sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (1,)
        assert "error_type" not in {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    conn.close()
    # Opening it again changes nothing and takes no new backup.
    backup.unlink()
    SqlAlchemyStore(sqlite_file_url(path)).close()
    assert not backup.exists()


def test_an_old_sqlite_workspace_opens_through_the_services(tmp_path: Path) -> None:
    from modelbuilder.services import runs, workspaces

    created = workspaces.create_workspace("legacy")
    assert created.store_url.startswith("sqlite:")
    database = Path(sa.make_url(created.store_url).database or "")
    shutil.copy(FIXTURES / "workspace-v1.db", database)
    for suffix in ("-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    with workspaces.open_workspace("legacy") as session:
        assert [run.id for run in runs.list_runs(session)] == [LEGACY_RUN]
    assert backup_path(database, "0001").is_file()


def _postgres_at(url: str, revision: str) -> None:
    """Build the schema of an older release in an empty PostgreSQL database."""
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(STORE_SCHEMA.config(conn), revision)
    finally:
        engine.dispose()


def test_an_old_postgresql_workspace_is_refused_until_upgraded_on_request(postgres_url: str) -> None:
    _postgres_at(postgres_url, STORE_SCHEMA.baseline)
    with pytest.raises(SchemaVersionError) as info:
        SqlAlchemyStore(postgres_url, workspace="team-ws")
    error = info.value
    assert f"revision {STORE_SCHEMA.baseline}" in str(error) and "team-ws" in str(error)
    assert (error.hint or "").endswith("modelbuilder workspace upgrade team-ws")
    assert "error_type" not in {c["name"] for c in _columns(postgres_url, "runs")}

    assert upgrade_store(postgres_url, "team-ws") == STORE_SCHEMA.baseline
    with SqlAlchemyStore(postgres_url, workspace="team-ws") as store:
        assert store.schema_version == STORE_SCHEMA.head
    assert _diff(postgres_url, STORE_SCHEMA) == []
    assert upgrade_store(postgres_url, "team-ws") == STORE_SCHEMA.head  # nothing left to do


def _columns(url: str, table: str) -> list[dict[str, object]]:
    engine = create_store_engine(url)
    try:
        return list(sa.inspect(engine).get_columns(table))  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_a_postgresql_workspace_of_a_newer_version_is_refused(postgres_url: str) -> None:
    SqlAlchemyStore(postgres_url).close()
    engine = create_store_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    for attempt in (
        lambda: SqlAlchemyStore(postgres_url, workspace="team-ws"),
        lambda: upgrade_store(postgres_url),
    ):
        with pytest.raises(SchemaVersionError, match="0099") as info:
            attempt()
        assert "newer modelbuilder" in str(info.value)
        assert "pip install -U modelbuilder" in (info.value.hint or "")


def test_threads_creating_one_new_store_at_once_all_succeed(store_url: str | None, tmp_path: Path) -> None:
    url = store_url or sqlite_file_url(tmp_path / "workspace.db")
    errors: list[BaseException] = []

    def open_once(index: int) -> None:
        try:
            if index % 2:  # a catalog migrating at the same time, in the same process (one alembic context)
                Catalog(tmp_path / f"catalog-{index}.db").close()
            SqlAlchemyStore(url).close()
        except BaseException as exc:  # collected: the assertion below shows them
            errors.append(exc)

    threads = [threading.Thread(target=open_once, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert _diff(url, STORE_SCHEMA) == []


def test_cli_tells_and_runs_the_upgrade_of_an_old_postgresql_workspace(postgres_url: str) -> None:
    from typer.testing import CliRunner

    from modelbuilder.cli import app
    from modelbuilder.services import workspaces

    workspaces.create_workspace("team-ws", store_url=postgres_url)
    engine = create_store_engine(postgres_url)
    try:
        with engine.begin() as conn:  # as an older modelbuilder left it (downgrades work too)
            command.downgrade(STORE_SCHEMA.config(conn), STORE_SCHEMA.baseline)
    finally:
        engine.dispose()
    runner = CliRunner()
    refused = runner.invoke(app, ["run", "list", "--workspace", "team-ws"])
    assert refused.exit_code == 1
    assert "older than revision" in refused.stderr
    assert (
        "Hint: Upgrade it once" in refused.stderr
        and "modelbuilder workspace upgrade team-ws" in refused.stderr
    )
    upgraded = runner.invoke(app, ["workspace", "upgrade", "team-ws"])
    assert upgraded.exit_code == 0, upgraded.stderr
    assert f"from schema revision {STORE_SCHEMA.baseline} to {STORE_SCHEMA.head}" in upgraded.stderr
    assert runner.invoke(app, ["run", "list", "--workspace", "team-ws"]).exit_code == 0
    again = runner.invoke(app, ["workspace", "upgrade", "team-ws"])
    assert f"already at schema revision {STORE_SCHEMA.head}" in again.stderr


def test_a_catalog_of_the_old_schema_is_backed_up_and_upgraded(tmp_path: Path) -> None:
    from modelbuilder.store import Catalog

    path = tmp_path / "catalog.db"
    engine = create_store_engine(sqlite_file_url(path))
    with (
        engine.begin() as conn
    ):  # the catalog as modelbuilder 0.1.0 wrote it: baseline tables, schema_version 1
        command.upgrade(CATALOG_SCHEMA.config(conn), CATALOG_SCHEMA.baseline)
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(
            sa.text("CREATE TABLE schema_version (id INTEGER PRIMARY KEY, version INTEGER, updated_at REAL)")
        )
        conn.execute(sa.text("INSERT INTO schema_version VALUES (1, 1, 0)"))
        conn.execute(sa.text("INSERT INTO resource_groups VALUES ('team', 'team', 0)"))
    engine.dispose()
    with Catalog(path) as catalog:
        assert [group.name for group in catalog.list_resource_groups()] == ["team"]
    assert "schema_version" not in _tables(sqlite_file_url(path))
    assert _diff(sqlite_file_url(path), CATALOG_SCHEMA) == []
    assert backup_path(path, CATALOG_SCHEMA.baseline).is_file()


def test_computes_of_a_revision_0003_workspace_gain_an_empty_token_ref(
    store_backend: str, store_url: str | None, tmp_path: Path
) -> None:
    """Revision 0004 adds ``computes.token_ref``: computes recorded before keep everything and have no
    token reference (they had none); new ones keep theirs. SQLite upgrades on open, PostgreSQL on request."""
    url = store_url or sqlite_file_url(tmp_path / "ws" / "workspace.db")
    if store_url is None:
        (tmp_path / "ws").mkdir()
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(STORE_SCHEMA.config(conn), "0003")
            conn.execute(
                sa.text(
                    "INSERT INTO computes (name, size, backend, state, min_nodes, max_nodes, "
                    "idle_seconds_before_scaledown, address, created_at, updated_at) VALUES ('old-ray', "
                    "'Standard_F2s_v2', 'ray', 'Succeeded', 0, 1, 1800, 'http://127.0.0.1:8265', 1, 1)"
                )
            )
    finally:
        engine.dispose()
    assert "token_ref" not in {c["name"] for c in _columns(url, "computes")}
    if store_backend == "postgresql":
        with pytest.raises(SchemaVersionError, match="revision 0003"):
            SqlAlchemyStore(url)
        assert upgrade_store(url) == "0003"
    with SqlAlchemyStore(url) as store:
        old = store.get_compute("old-ray")
        assert (old.address, old.state.value, old.token_ref) == ("http://127.0.0.1:8265", "Succeeded", None)
        new = store.create_compute("new-ray", size="Standard_F2s_v2", backend="ray", token_ref="MB_T")
        assert store.get_compute(new.name).token_ref == "MB_T"
    assert _diff(url, STORE_SCHEMA) == []
    if store_backend == "sqlite":
        assert backup_path(tmp_path / "ws" / "workspace.db", "0003").is_file()
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:  # and back: 0004's downgrade drops only the column
            command.downgrade(STORE_SCHEMA.config(conn), "0003")
    finally:
        engine.dispose()
    assert "token_ref" not in {c["name"] for c in _columns(url, "computes")}
