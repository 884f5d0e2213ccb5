"""SQLAlchemy engines for the workspace stores and the catalog, and transactions that survive locks.

SQLite is used by several processes at once (the CLI, the training worker, the portal), so:

- every connection runs in WAL mode (readers never block the writer) with ``synchronous=NORMAL``
  (durable against a killed process, which is what a training worker risks), a busy timeout and
  foreign keys on;
- pysqlite's own transaction handling is switched off and we emit ``BEGIN`` ourselves (the recipe from
  SQLAlchemy's SQLite documentation): ``BEGIN IMMEDIATE`` for writes, so the write lock is taken up front
  and waited for with the busy timeout instead of failing on a lock upgrade, plain ``BEGIN`` for reads;
- a transaction that still meets ``database is locked`` is retried with jittered exponential backoff, and
  only a lock that outlasts the retry budget reaches the caller, as ``WorkspaceBusyError`` with a hint.

Nothing here is SQLite-only outside the SQLite hooks: a PostgreSQL URL gets a plain pooled engine.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import StaticPool

from ..errors import InvalidParameterError, MissingDependencyError, WorkspaceBusyError, WorkspaceError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Execution option that marks a connection whose transactions write (``BEGIN IMMEDIATE`` on SQLite).
WRITE_OPTION = "modelbuilder_write"
DEFAULT_BUSY_TIMEOUT_S = 30.0
DEFAULT_RETRY_S = 30.0
_LOCK_MESSAGES = ("database is locked", "database is busy", "database table is locked")
_DRIVER_HINTS = {"postgresql": '"modelbuilder[postgres]"', "mysql": "pymysql"}


#: ``scheme://user:PASSWORD@`` in text that SQLAlchemy cannot parse as a URL.
_PASSWORD_IN_TEXT = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``: the only form of a store URL that goes into messages,
    logs, views and the portal. Text that is not a valid URL is masked too (``user:...@`` parts)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _PASSWORD_IN_TEXT.sub(r"\1***@", str(url))


def parse_url(url: str | URL) -> URL:
    """Parse a SQLAlchemy URL, raising InvalidParameterError with an example when it is malformed."""
    try:
        return sa.make_url(url)
    except ArgumentError as exc:
        raise InvalidParameterError(
            f"The store URL {mask_url(url)!r} is not a valid SQLAlchemy URL.",
            hint="Use sqlite:////absolute/path/workspace.db or postgresql://user:password@host/database.",
        ) from exc


def is_sqlite(url: str | URL) -> bool:
    return parse_url(url).get_backend_name() == "sqlite"


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def sqlite_file_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file at ``path`` (made absolute)."""
    return URL.create("sqlite", database=str(Path(path).expanduser().resolve())).render_as_string()


def describe_url(url: URL) -> str:
    """The URL without its password, for messages and logs (``mask_url``)."""
    return mask_url(url)


def create_store_engine(url: str | URL, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    """Create the engine for a store URL (SQLite file, SQLite in memory, or any SQLAlchemy database).

    Raises:
        InvalidParameterError: the URL is malformed.
        MissingDependencyError: the database driver for the URL is not installed.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(parsed, busy_timeout_s)
    if parsed.drivername == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2; the [postgres] extra installs psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        backend = parsed.get_backend_name()
        raise MissingDependencyError(
            f"The store URL {describe_url(parsed)!r} needs a database driver for '{backend}' that is "
            "not installed.",
            hint=f"Install one, for example: pip install {_DRIVER_HINTS.get(backend, 'the driver')}",
        ) from exc


def _create_sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    memory = is_memory_sqlite(url)
    if memory:
        # One shared connection, or every checkout would see a new, empty database.
        engine = sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        assert url.database is not None  # not memory, so a file path
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see _on_begin
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")

    return engine


def is_lock_error(exc: BaseException) -> bool:
    """True for SQLite's "database is locked"/"busy" errors, which a retry can cure."""
    return isinstance(exc, OperationalError) and any(m in str(exc.orig).lower() for m in _LOCK_MESSAGES)


class TransactionRunner:
    """Runs functions inside read or write transactions of one engine, retrying lock errors.

    Args:
        engine: from ``create_store_engine``.
        retry_s: how long to keep retrying a transaction that fails with a lock error (on top of the
            busy timeout that SQLite already waits inside each attempt).
        what: names the database in messages, e.g. "workspace 'ws1' (sqlite:////.../workspace.db)".
    """

    def __init__(self, engine: Engine, *, retry_s: float = DEFAULT_RETRY_S, what: str = "") -> None:
        self.engine = engine
        self.retry_s = retry_s
        self.what = what or describe_url(engine.url)
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        # An in-memory SQLite database is one shared connection: its transactions must take turns.
        self._turns: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if is_memory_sqlite(engine.url) else contextlib.nullcontext()
        )

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a read transaction and return its result."""
        return self._run(self.engine, fn, "reading")

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a write transaction (committed when it returns, rolled back if it raises).

        ``fn`` may run more than once when the database is locked, so it must not have side effects
        outside the transaction.

        Raises:
            WorkspaceBusyError: the database stayed locked past the busy timeout and the retries.
            WorkspaceError: the database cannot be used at all (unreadable file, disk error...).
        """
        return self._run(self._write_engine, fn, "writing")

    def _run(self, engine: Engine, fn: Callable[[Connection], T], doing: str) -> T:
        deadline = time.monotonic() + self.retry_s
        delay = 0.02
        attempts = 0
        while True:
            attempts += 1
            try:
                with self._turns, engine.begin() as conn:
                    return fn(conn)
            except OperationalError as exc:
                if not is_lock_error(exc):
                    url = describe_url(self.engine.url)
                    where = self.what if url in self.what else f"{self.what} ({url})"
                    raise WorkspaceError(
                        f"The database of {where} failed while {doing}: {exc.orig}.",
                        hint="Check that the file or server is reachable, readable and writable.",
                    ) from exc
                if time.monotonic() >= deadline:
                    raise WorkspaceBusyError(
                        f"The database of {self.what} stayed locked while {doing} "
                        f"({attempts} attempts over {self.retry_s:g} s plus the busy timeout).",
                        hint="Another process holds a long transaction on it; wait and try again, or "
                        "stop that process. For many concurrent writers use a PostgreSQL store.",
                    ) from exc
                logger.debug("%s is locked while %s; retry %d in %.3f s", self.what, doing, attempts, delay)
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)

    def dispose(self) -> None:
        self.engine.dispose()
