"""Install and run a generated <Name>.WebApi the way its README says, in a torch-free venv.

For any test that needs the real thing (the slow tests here, and end-to-end tests that download the Web
API from a run): ``load_test_module("codegen/webapi_venv.py", "webapi_venv")``. The venv is built from
the Web API's ``requirements-test.txt`` (PyPI, about 40 s) once per test session and requirements
content; the test is skipped when PyPI cannot be reached.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

PIP_OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
READY = ".webapi-venv-ready"


def venv_env() -> dict[str, str]:
    """The environment without this venv's Python settings (PYTHONPATH & co. would leak modules in)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def venv_shell_env(python: Path) -> dict[str, str]:
    """A shell environment with the venv activated: ``python`` and ``pip`` are the venv's."""
    env = venv_env()
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def webapi_venv(web_api: Path, base: Path) -> Path:
    """The Python of a venv holding only ``web_api``'s requirements (and its tests'), built once.

    Args:
        web_api: a generated ``<Name>.WebApi`` folder.
        base: where venvs are kept (the session's ``tmp_path_factory.getbasetemp()``).
    """
    requirements = b"".join(
        (web_api / name).read_bytes() for name in ("requirements.txt", "requirements-test.txt")
    )
    venv = base / f"webapi-venv-{hashlib.sha256(requirements).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if (venv / READY).is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted test
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=venv_env(), timeout=300)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", "requirements-test.txt"],
        cwd=web_api,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0 and any(sign in install.stderr for sign in PIP_OFFLINE_SIGNS):
        pytest.skip(f"PyPI is not reachable from this machine: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stdout + install.stderr
    (venv / READY).write_text(f"{time.monotonic() - started:.1f} s\n", encoding="utf-8")
    print(f"Web API venv built in {time.monotonic() - started:.1f} s")  # shown with -s: the slow part
    return python


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(command: list[str], cwd: Path, env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """Run ``command`` (a Web API on ``port``) until it answers /health; Ctrl+C it afterwards.

    Yields the base URL. On leaving, asserts that the server stopped with status 0.
    """
    with open(log, "w", encoding="utf-8") as output:
        # Its own process group: Ctrl+C reaches the server even when a shell started it.
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the Web API exited early:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the Web API did not answer /health:\n{log.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl+C: uvicorn shuts down gracefully, main.py exits 0
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    assert process.returncode == 0, log.read_text()
