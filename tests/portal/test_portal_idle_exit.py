"""A portal started on demand stops by itself when nobody uses it."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from modelbuilder.portal.server import serve  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_portal_stops_after_idle_time() -> None:
    port = free_port()
    thread = threading.Thread(target=serve, args=("idle-ws",), kwargs={"port": port, "idle_exit_s": 2.0},
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                assert response.status == 200
                break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail("the portal never answered")
    thread.join(timeout=20)
    assert not thread.is_alive(), "the idle portal did not stop by itself"
