"""``ensure_portal``: find the portal on a port, or start one in the background (for "Monitor current run").

Torch- and FastAPI-free (standard library only), so ``modelbuilder train`` can call it cheaply. A portal
answers ``GET /api/health`` with ``{"service": "modelbuilder-portal", ...}``; one portal serves every
workspace of the machine, so whichever portal is on the port will do.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .. import settings

logger = logging.getLogger(__name__)

SERVICE_NAME = "modelbuilder-portal"
START_TIMEOUT_S = 10.0


def portal_log_path(port: int) -> Path:
    """Where a portal started in the background writes its output."""
    return settings.home() / "logs" / f"portal-{port}.log"


def portal_health(port: int, timeout: float = 0.5) -> dict[str, Any] | None:
    """The health answer of whatever listens on 127.0.0.1:``port``, or None when nothing answers."""
    url = f"http://127.0.0.1:{port}/api/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            data = json.loads(response.read(65536).decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else {}


def _is_portal(health: dict[str, Any] | None) -> bool:
    return health is not None and health.get("service") == SERVICE_NAME


#: A portal started on demand by ``modelbuilder train`` stops after this long without a request.
ON_DEMAND_IDLE_EXIT_S = 3600


def start_portal_process(workspace_name: str, port: int) -> subprocess.Popen[bytes]:
    """Start ``python -m modelbuilder.portal`` detached from this process (its own session).

    Raises:
        OSError: the process cannot be started.
    """
    log_path = portal_log_path(port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "modelbuilder.portal"]
    command += ["--workspace", workspace_name, "--port", str(port), "--idle-exit", str(ON_DEMAND_IDLE_EXIT_S)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=settings.home(),
            env=dict(os.environ),
        )


def ensure_portal(workspace_name: str, port: int = settings.DEFAULT_PORTAL_PORT) -> str | None:
    """The base URL of a portal on 127.0.0.1:``port``, starting one in the background if none answers.

    Returns None when no portal can be had: the port is taken by another program, or the portal did not
    answer within ~10 seconds (its output is in ``portal_log_path(port)``).
    """
    base_url = f"http://127.0.0.1:{port}"
    health = portal_health(port)
    if health is not None:
        if _is_portal(health):
            return base_url
        logger.warning("Port %d answers, but not as a modelbuilder portal", port)
        return None
    try:
        settings.home().mkdir(parents=True, exist_ok=True)
        process = start_portal_process(workspace_name, port)
    except OSError as exc:
        logger.warning("Cannot start the portal: %s", exc)
        return None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _is_portal(portal_health(port)):
            logger.info("Started the portal (pid %d) at %s", process.pid, base_url)
            return base_url
        if process.poll() is not None:
            # It exited: maybe another portal won the race for the port; ask once more.
            return base_url if _is_portal(portal_health(port)) else None
        time.sleep(0.2)
    logger.warning("The portal did not answer within %.0f s; see %s", START_TIMEOUT_S, portal_log_path(port))
    return None
