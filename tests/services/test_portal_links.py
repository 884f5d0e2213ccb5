"""A run's ``portal_url`` (``run show --json``, ``Run.get_details()``) is a link only to a portal that
serves this home; with none, it is None and ``portal_url_reason`` says how to start one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelbuilder import settings
from modelbuilder.entities import Run, RunStatus
from modelbuilder.portal.identity import SERVICE_NAME, home_key
from modelbuilder.services import portal_links
from modelbuilder.services.views import run_view

RUN = Run(id="a" * 32, experiment_id="e1", experiment="flowers", status=RunStatus.RUNNING)


@pytest.fixture(autouse=True)
def fresh_lookups() -> Iterator[None]:
    portal_links.forget()
    yield
    portal_links.forget()


def serve_health(answer: dict[str, Any]) -> ThreadingHTTPServer:
    """A stand-in for a portal on the preferred port: it answers /api/health with ``answer``."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            body = json.dumps(answer).encode()
            self.send_response(200 if self.path == "/api/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def portal_on_preferred_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    answer: dict[str, Any] = {"service": SERVICE_NAME, "home": home_key()}
    server = serve_health(answer)
    monkeypatch.setenv("MODELBUILDER_PORTAL_PORT", str(server.server_address[1]))
    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()


def test_no_portal_means_no_link_and_says_how_to_start_one() -> None:
    view = run_view(RUN, "vision-ws")
    assert view["portal_url"] is None
    assert view["portal_url_reason"] == (
        f"No portal is running for MODELBUILDER_HOME {home_key()}; start one with: "
        "modelbuilder portal --workspace vision-ws"
    )


def test_a_portal_of_this_home_gives_the_run_link(portal_on_preferred_port: dict[str, Any]) -> None:
    view = run_view(RUN, "vision-ws")
    port = settings.portal_port()
    assert view["portal_url"] == f"http://127.0.0.1:{port}/workspaces/vision-ws/runs/{RUN.id}"
    assert view["portal_url_reason"] is None


def test_a_portal_of_another_home_on_the_port_gives_no_link(portal_on_preferred_port: dict[str, Any]) -> None:
    portal_on_preferred_port["home"] = "/somewhere/else"  # the configured port answers, for another home
    view = run_view(RUN, "vision-ws")
    assert view["portal_url"] is None and "No portal is running" in view["portal_url_reason"]


def test_an_explicit_portal_address_is_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBUILDER_PORTAL_URL", "https://portal.example.org/mb/")
    view = run_view(RUN, "vision-ws")
    assert view["portal_url"] == f"https://portal.example.org/mb/workspaces/vision-ws/runs/{RUN.id}"
    assert view["portal_url_reason"] is None


def test_views_of_many_runs_ask_the_portal_once(
    portal_on_preferred_port: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str | None] = []
    real = portal_links.find_portal

    def counting() -> str | None:
        asked.append(real())
        return asked[-1]

    monkeypatch.setattr(portal_links, "find_portal", counting)
    urls = {run_view(RUN, "vision-ws")["portal_url"] for _ in range(20)}
    assert len(asked) == 1 and len(urls) == 1 and None not in urls
    # Another home (another MODELBUILDER_HOME in this process) is looked up again.
    monkeypatch.setenv("MODELBUILDER_HOME", str(settings.home() / "other"))
    assert run_view(RUN, "vision-ws")["portal_url"] is None
    assert len(asked) == 2


def test_a_view_without_workspace_has_no_portal_fields() -> None:
    view = run_view(RUN)
    assert "portal_url" not in view and "portal_url_reason" not in view
