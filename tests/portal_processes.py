"""Real portal processes in tests: a foreign portal (another MODELBUILDER_HOME) on the preferred port, and the
cleanup of every portal a test's home started (the launcher starts them detached, with an hour's idle exit).

Tests never use the real 8765: ``portal_port`` makes a free port the preferred one
(``MODELBUILDER_PORTAL_PORT``), which is where a foreign portal sits in ``foreign_portal``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelbuilder.portal.launcher import portal_health

START_TIMEOUT_S = 60.0


@dataclass
class ForeignPortal:
    """A portal of another home, on ``port``."""

    home: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_foreign_portal(home: Path, port: int, workspace: str = "demo-ws") -> ForeignPortal:
    """``python -m modelbuilder.portal`` over ``home`` on ``port``, once it answers."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MODELBUILDER_HOME": str(home)}
    log = open(home / "foreign-portal.log", "ab")  # noqa: SIM115 - the process keeps it
    process = subprocess.Popen(
        [sys.executable, "-m", "modelbuilder.portal", "--workspace", workspace, "--port", str(port)],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        health = portal_health(port)
        if health is not None and health.get("home") == os.path.realpath(home):
            return ForeignPortal(home, port, process)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    process.wait()
    raise AssertionError(f"the foreign portal did not start: {(home / 'foreign-portal.log').read_text()}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_pid(pid: int) -> None:
    """SIGTERM a portal this test process started, wait for it, and reap it when it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: wait until it is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            done = 0
        if done:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def stop_portals_of(home: Path) -> list[int]:
    """Stop every portal whose record is in ``home``; returns their pids."""
    pids = []
    for record in sorted((home / "portals").glob("*.json")):
        try:
            pids.append(int(json.loads(record.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            continue
    for pid in pids:
        stop_pid(pid)
    return pids


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    """Status and body of a GET (4xx/5xx included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback test URLs
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@pytest.fixture
def portal_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A free port made the preferred portal port of this test (never the real 8765)."""
    port = free_port()
    monkeypatch.setenv("MODELBUILDER_PORTAL_PORT", str(port))
    return port


@pytest.fixture
def own_portals(isolated_home: Path) -> Iterator[Path]:
    """Stops, after the test, every portal started for the test's home; yields the home."""
    yield isolated_home
    stop_portals_of(isolated_home)


@pytest.fixture
def foreign_portal(tmp_path_factory: pytest.TempPathFactory, portal_port: int) -> Iterator[ForeignPortal]:
    """A portal of another home on the preferred port (as the demo's portal on 8765 would be)."""
    portal = start_foreign_portal(tmp_path_factory.mktemp("foreign-home"), portal_port)
    yield portal
    stop_pid(portal.process.pid)
    portal.process.wait(timeout=15)
