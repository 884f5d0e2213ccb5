"""A store URL's password never reaches a message, a log record, ``workspace show``/``list`` or the portal."""

from __future__ import annotations

import logging
import socket

import pytest
from typer.testing import CliRunner

from modelbuilder.cli import app
from modelbuilder.errors import InvalidParameterError, WorkspaceError
from modelbuilder.services import workspaces
from modelbuilder.store import SqlAlchemyStore, mask_url

SECRET = "s3cret-Pa55"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"postgresql://alice:{SECRET}@db.example/team", "postgresql://alice:***@db.example/team"),
        (f"postgresql+psycopg://alice:{SECRET}@h:5432/t?x=1", "postgresql+psycopg://alice:***@h:5432/t?x=1"),
        ("postgresql://alice@db.example/team", "postgresql://alice@db.example/team"),
        ("sqlite:////tmp/ws/workspace.db", "sqlite:////tmp/ws/workspace.db"),
        # Not a URL SQLAlchemy can parse: the user:password@ part is masked all the same.
        (f"not a url://alice:{SECRET}@host", "not a url://alice:***@host"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_messages_and_logs_never_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    unreachable = f"postgresql://alice:{SECRET}@127.0.0.1:{_closed_port()}/team"
    with pytest.raises(WorkspaceError) as failed:
        SqlAlchemyStore(unreachable, retry_s=0)
    with pytest.raises(InvalidParameterError) as malformed:
        SqlAlchemyStore(f"://alice:{SECRET}@nowhere")
    with pytest.raises(WorkspaceError) as not_created:
        workspaces.create_workspace("team-ws", store_url=unreachable)
    for error in (failed.value, malformed.value, not_created.value):
        assert SECRET not in f"{error} {error.hint} {error!r}"
    assert "alice:***@" in str(failed.value) and "alice:***@" in str(malformed.value)
    assert caplog.records, "nothing was logged: the log check below would prove nothing"
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    result = CliRunner().invoke(app, ["workspace", "create", "team-ws", "--store", unreachable])
    assert result.exit_code == 1
    assert SECRET not in result.stdout + result.stderr and "***" in result.stderr


def test_workspace_show_list_and_portal_never_show_the_password(
    postgres_server: object, postgres_url: str, tmp_path: object
) -> None:
    password = postgres_server.password  # type: ignore[attr-defined]
    created = workspaces.create_workspace("team-ws", store_url=postgres_url)
    assert password in created.store_url  # the catalog keeps what it needs to connect
    runner = CliRunner()
    for args in (
        ["workspace", "show", "team-ws"],
        ["workspace", "show", "team-ws", "--json"],
        ["workspace", "list"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.stderr
        assert password not in result.stdout + result.stderr and "***" in result.stdout

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from modelbuilder.portal import create_app

    with TestClient(create_app("team-ws", port=8765), base_url="http://127.0.0.1:8765") as client:
        for path in ("/api/workspaces", "/api/workspaces/team-ws", "/workspaces/team-ws", "/"):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:500])
            assert password not in response.text, path
