"""Starting the portal: ``ensure_portal`` (on demand, in the background), ``serve`` and ``python -m``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from browser_steps import free_port
from portal_fixtures import WORKSPACE, PortalWorld

from modelbuilder import settings
from modelbuilder.errors import InvalidStateError
from modelbuilder.portal import ensure_portal
from modelbuilder.portal.__main__ import main
from modelbuilder.portal.launcher import SERVICE_NAME, portal_health, portal_log_path
from modelbuilder.portal.server import check_port_free, serve


def _stop(pid: int) -> None:
    """Stop a portal this test started (through ensure_portal), and reap it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


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


def test_ensure_portal_does_not_mistake_another_service_for_a_portal(other_service: int) -> None:
    started = time.monotonic()
    assert ensure_portal(WORKSPACE, other_service) is None
    assert time.monotonic() - started < 3  # nothing was started or waited for
    assert not portal_log_path(other_service).exists()


@pytest.mark.timeout(60)
def test_ensure_portal_returns_none_when_the_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        assert ensure_portal(WORKSPACE, port) is None
    log = portal_log_path(port).read_text(encoding="utf-8")
    assert "already in use" in log and "--port" in log


def test_serve_warns_when_not_on_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: seen.update(host=self.config.host))
    port = free_port()
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
