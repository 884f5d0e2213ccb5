"""Starting the portal: ``ensure_portal`` (on demand, in the background), ``serve`` and ``python -m``.

Every test here has a free port as its preferred portal port (``portal_port``), and every portal started for
the test's home is stopped afterwards (``own_portals``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser_steps import free_port
from portal_fixtures import WORKSPACE, PortalWorld

from modelbuilder import settings
from modelbuilder.errors import InvalidStateError
from modelbuilder.portal import ensure_portal
from modelbuilder.portal.__main__ import main
from modelbuilder.portal.launcher import SERVICE_NAME, portal_health, portal_log_path
from modelbuilder.portal.server import check_port_free, serve
from portal_processes import get
from portal_processes import stop_pid as _stop

pytestmark = pytest.mark.usefixtures("portal_port", "own_portals")


@pytest.mark.timeout(60)
def test_ensure_portal_starts_one_in_the_background_and_reuses_it(world: PortalWorld) -> None:
    run_id = world.start_run()
    port = free_port()
    assert portal_health(port) is None
    url = ensure_portal(WORKSPACE, port)
    health = portal_health(port)
    assert health is not None
    try:
        assert url == f"http://127.0.0.1:{port}"
        assert health["service"] == SERVICE_NAME and health["workspace"] == WORKSPACE
        assert health["home"] == os.path.realpath(settings.home()) and health["port"] == port
        # The "Monitor current run" link works while the run is in progress.
        link = settings.portal_run_url(WORKSPACE, run_id, base_url=url)
        with urllib.request.urlopen(link, timeout=10) as response:
            page = response.read().decode("utf-8")
        assert response.status == 200 and run_id in page and "Running" in page
        assert ensure_portal(WORKSPACE, port) == url  # reused, not started again
        assert portal_health(port)["pid"] == health["pid"]  # type: ignore[index]
        assert url in portal_log_path(port).read_text(encoding="utf-8")
    finally:
        _stop(int(health["pid"]))
    assert portal_health(port) is None


class _OtherService(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"status": "ok", "service": "something-else"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_service() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _serves_this_home_at(url: str | None, port_not: int) -> int:
    """The port of ``url``, a portal of this test's home on a port other than ``port_not``."""
    assert url is not None and url.startswith("http://127.0.0.1:")
    port = int(url.rsplit(":", 1)[1])
    health = portal_health(port)
    assert port != port_not and health is not None and health["home"] == os.path.realpath(settings.home())
    return port


@pytest.mark.timeout(90)
def test_another_service_on_the_port_is_left_alone_and_a_portal_starts_elsewhere(
    other_service: int, world: PortalWorld
) -> None:
    run_id = world.start_run()
    url = ensure_portal(WORKSPACE, other_service)
    _serves_this_home_at(url, other_service)
    assert portal_health(other_service) == {"status": "ok", "service": "something-else"}
    assert not portal_log_path(other_service).exists()  # nothing was even tried on its port
    assert get(settings.portal_run_url(WORKSPACE, run_id, base_url=url))[0] == 200


@pytest.mark.timeout(90)
def test_a_taken_port_that_does_not_answer_gets_a_portal_elsewhere() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        _serves_this_home_at(ensure_portal(WORKSPACE, port), port)


@pytest.mark.timeout(90)
def test_ensure_portal_returns_none_when_no_portal_can_start(own_portals: Path) -> None:
    assert ensure_portal("no") is None  # the portal refuses the workspace name and exits
    logs = "".join(path.read_text(encoding="utf-8") for path in (own_portals / "logs").glob("portal-*.log"))
    assert "Error:" in logs and "'no'" in logs
    assert not list((own_portals / "portals").glob("*.json"))


def test_serve_warns_when_not_on_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: seen.update(host=self.config.host))
    port = free_port()
    monkeypatch.setenv("MODELBUILDER_PORTAL_TOKEN", "a-long-enough-access-token")  # required off loopback
    serve(WORKSPACE, host="0.0.0.0", port=port)
    assert seen == {"host": "0.0.0.0"}
    captured = capsys.readouterr()
    assert "other machines can reach it" in captured.err and f"http://0.0.0.0:{port}/" in captured.out
    serve(WORKSPACE, port=port)
    captured = capsys.readouterr()
    assert seen == {"host": "127.0.0.1"} and captured.err == ""
    assert captured.out.startswith(f"Portal of workspace {WORKSPACE}: http://127.0.0.1:{port}/")


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        with pytest.raises(InvalidStateError, match="already in use") as caught:
            check_port_free("127.0.0.1", port)
        assert f"--port {port + 1}" in (caught.value.hint or "")


def test_module_entry_point_prints_errors_with_hints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workspace", "no", "--port", str(free_port())]) == 1
    captured = capsys.readouterr()
    assert "Error:" in captured.err and "'no'" in captured.err and "Hint:" in captured.err


def test_the_launcher_needs_neither_fastapi_nor_torch() -> None:
    code = (
        "import sys\n"
        "for name in ('fastapi', 'starlette', 'uvicorn', 'torch', 'jinja2'):\n"
        "    sys.modules[name] = None\n"
        "from modelbuilder.portal import ensure_portal\n"
        "from modelbuilder.portal.launcher import portal_health\n"
        "print(ensure_portal.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ensure_portal"
