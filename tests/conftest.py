"""Test isolation: every test gets its own MODELBUILDER_HOME, runs offline, with a clean env.

Also the PostgreSQL server of the session (``postgres_server``, started on first use, see ``pg_server.py``)
and ``store_backend``: a parameter that runs a test on SQLite and on PostgreSQL, with ``store_url`` the
workspace store URL to use (None: the default SQLite file; else a new PostgreSQL database).
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pg_server import PostgresServer, PostgresUnavailable
from ray_head import (  # noqa: F401 - shared fixtures
    ray_contract_compute,
    ray_fake_trainer,
    ray_head,
    ray_token_head,
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("MODELBUILDER_"):
            monkeypatch.delenv(key, raising=False)
    home = tmp_path_factory.mktemp("mbhome")
    monkeypatch.setenv("MODELBUILDER_HOME", str(home))
    monkeypatch.setenv("MODELBUILDER_OFFLINE", "1")
    monkeypatch.setenv("MODELBUILDER_NO_PROGRESS", "1")
    # A portal any test starts prefers a free port, never the real 8765 (a user's portal may be there).
    monkeypatch.setenv("MODELBUILDER_PORTAL_PORT", str(_free_port()))
    random.seed(0)
    np.random.seed(0)
    yield home


@pytest.fixture(scope="session", autouse=True)
def hints_parse_under_the_cli() -> Iterator[None]:
    """At the session's end: every command an error hint suggested in this process parses under the CLI."""
    yield
    from test_hints import unparsable_built_commands

    unparsable = unparsable_built_commands()
    assert not unparsable, "error hints suggested commands the CLI refuses:\n" + "\n".join(unparsable)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        message = f"PostgreSQL could not start, so the PostgreSQL store tests cannot run: {exc}"
        # In CI a missing PostgreSQL fails the tests, never a silent skip; locally -ra shows the reason.
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(f"*** {message} ***")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty PostgreSQL store (with the server's password in it): a schema of its own in
    one shared database, as the store sees it an empty database (and 1000x faster to make than one)."""
    return postgres_server.create_schema()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> str:
    """Runs a test once per store backend; use with ``store_url``."""
    return str(request.param)


@pytest.fixture
def store_url(store_backend: str, request: pytest.FixtureRequest) -> str | None:
    """The store URL for ``store_backend``: None (the default SQLite file) or a new PostgreSQL database."""
    if store_backend == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return None
