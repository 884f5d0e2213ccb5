"""``ensure_portal``: find this home's portal, or start one in the background (for "Monitor current run").

Torch- and FastAPI-free (standard library only), so ``modelbuilder train`` can call it cheaply.

A link must never lie: a portal answers ``GET /api/health`` with the ``MODELBUILDER_HOME`` it serves
(see ``identity``), and only a portal of *this* home is used. Another home's portal on the preferred port
(another user, or the demo's ``~/.modelbuilder``) is left alone and a new portal is started on a free port,
so two homes on one machine each get a working link at once.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import InvalidStateError
from ..hints import command
from .identity import SERVICE_NAME, forget_if_dead, home_key, read_records

logger = logging.getLogger(__name__)

__all__ = [
    "SERVICE_NAME",
    "ensure_portal",
    "find_portal",
    "portal_base_url",
    "portal_health",
    "portal_log_path",
    "portal_run_url",
    "portal_workspace_url",
]

#: The portal's import of FastAPI, uvicorn and the app takes seconds on a busy 2-core machine.
START_TIMEOUT_S = 20.0
#: A portal started on demand by ``modelbuilder train`` stops after this long without a request.
ON_DEMAND_IDLE_EXIT_S = 3600


def portal_log_path(port: int) -> Path:
    """Where a portal started in the background writes its output."""
    return settings.home() / "logs" / f"portal-{port}.log"


def portal_health(port: int, timeout: float = 0.5, host: str = "127.0.0.1") -> dict[str, Any] | None:
    """The health answer of whatever listens on ``host``:``port``, or None when nothing answers."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/api/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            data = json.loads(response.read(65536).decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else {}


def serves_this_home(health: dict[str, Any] | None) -> bool:
    """Is this the health answer of a portal over this process's ``MODELBUILDER_HOME``?"""
    return (
        health is not None
        and health.get("service") == SERVICE_NAME
        and health.get("home") == home_key()
    )


def find_portal() -> str | None:
    """The base URL of a running portal that serves this ``MODELBUILDER_HOME``, or None. Starts nothing.

    Looks at this home's portal records first (a portal may have had to take another port), then at the
    preferred port (a portal started before records existed answers there too).
    """
    for record in read_records():
        if serves_this_home(portal_health(record.port, host=record.connect_host)):
            return record.base_url
        forget_if_dead(record)
    port = settings.portal_port()
    if serves_this_home(portal_health(port)):
        return f"http://127.0.0.1:{port}"
    return None


def ensure_portal(workspace_name: str, port: int | None = None) -> str | None:
    """The base URL of a portal serving this home, started in the background when none runs.

    A new portal takes ``port`` (default: ``settings.portal_port()``) when it is free, else a free port.

    Returns None when no portal can be had: it did not answer within ``START_TIMEOUT_S`` or exited (its
    output is in ``portal_log_path(port)``).
    """
    found = find_portal()
    if found is not None:
        return found
    preferred = settings.portal_port() if port is None else port
    try:
        settings.home().mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("Cannot start the portal: %s", exc)
        return None
    # Two tries: the chosen port can be taken between the check and the portal's bind.
    for attempt in range(2):
        chosen = preferred if attempt == 0 and port_is_free(preferred) else free_port()
        base_url = _start_and_wait(workspace_name, chosen)
        if base_url is not None:
            return base_url
        found = find_portal()  # another launcher of this home may have won the race
        if found is not None:
            return found
    return None


def _start_and_wait(workspace_name: str, port: int) -> str | None:
    try:
        process = start_portal_process(workspace_name, port)
    except OSError as exc:
        logger.warning("Cannot start the portal: %s", exc)
        return None
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if serves_this_home(portal_health(port)):
            logger.info("Started the portal (pid %d) at %s", process.pid, base_url)
            return base_url
        if process.poll() is not None:
            logger.info("The portal on port %d exited with code %s", port, process.returncode)
            return None
        time.sleep(0.2)
    logger.warning("The portal did not answer within %.0f s; see %s", START_TIMEOUT_S, portal_log_path(port))
    return None


def start_portal_process(workspace_name: str, port: int) -> subprocess.Popen[bytes]:
    """Start ``python -m modelbuilder.portal`` for this home, detached from this process (its own session).

    Raises:
        OSError: the process cannot be started.
    """
    log_path = portal_log_path(port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "modelbuilder.portal"]
    argv += ["--workspace", workspace_name, "--port", str(port), "--idle-exit", str(ON_DEMAND_IDLE_EXIT_S)]
    # The home is passed explicitly: the portal must serve the home of the run it links to.
    env = {**os.environ, "MODELBUILDER_HOME": str(settings.home())}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=settings.home(),
            env=env,
        )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can ``host``:``port`` be bound now? (Answers for this instant only.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the system reports free on ``host`` (taken by nobody at this instant)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------ links for the Python API


def portal_base_url(workspace_name: str, *, start: bool = True) -> str:
    """The base URL of a portal that serves this home: ``MODELBUILDER_PORTAL_URL`` when set, else this home's
    running portal, else (with ``start``) one started in the background.

    Raises:
        InvalidStateError: no portal serves this home and none could be started (or ``start`` is False).
    """
    configured = settings.portal_url_override()
    if configured is not None:
        return configured
    base = ensure_portal(workspace_name) if start else find_portal()
    if base is not None:
        return base
    logs = portal_log_path(settings.portal_port()).parent
    tried = f" and none could be started (see the portal-<port>.log files in {logs})" if start else ""
    raise InvalidStateError(
        f"No portal is running for MODELBUILDER_HOME {home_key()}{tried}, so there is no link to open.",
        hint=f"Start one: {command('portal', workspace=workspace_name)}",
    )


def portal_workspace_url(workspace_name: str, *, start: bool = True) -> str:
    """The portal page of a workspace, on a portal that serves this home (see ``portal_base_url``)."""
    return f"{portal_base_url(workspace_name, start=start)}/workspaces/{workspace_name}"


def portal_run_url(workspace_name: str, run_id: str, *, start: bool = True) -> str:
    """The portal page of a run ("Monitor current run"), on a portal that serves this home.

    Raises:
        InvalidStateError: no portal serves this home and none could be started (or ``start`` is False).
    """
    return settings.portal_run_url(workspace_name, run_id, portal_base_url(workspace_name, start=start))
