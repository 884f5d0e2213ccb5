"""``serve``: run the portal with uvicorn (127.0.0.1 by default; another host only with a warning)."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Any

from .. import settings
from ..errors import InvalidStateError, require
from ..hints import command
from .identity import PortalIdentity, remove_record, write_record
from .security import is_loopback

logger = logging.getLogger(__name__)


def check_port_free(host: str, port: int) -> None:
    """Raise a clear error when ``host:port`` cannot be bound (uvicorn would only log and exit).

    Raises:
        InvalidStateError: the port is taken, or the address is not on this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidStateError(
                    f"Port {port} on {host} is already in use, so the portal cannot start there.",
                    hint=f"Open the portal that may already run at http://{host}:{port}/, or start this "
                    f"one on another port: {command('portal', port=port + 1)}",
                ) from exc
            raise InvalidStateError(
                f"The portal cannot listen on {host}:{port}: {exc.strerror}.",
                hint="Use --host 127.0.0.1 (the default) or an address of this machine.",
            ) from exc


def serve(workspace_name: str, host: str = "127.0.0.1", port: int | None = None,
          idle_exit_s: float | None = None) -> None:
    """Serve the portal for ``workspace_name`` until interrupted (Ctrl-C); prints its URL first.

    ``port`` None: ``settings.portal_port()``. While it serves, the portal's record
    (``<MODELBUILDER_HOME>/portals/<port>.json``) tells launchers of this home where it is. With
    ``idle_exit_s`` (used for portals started on demand by ``modelbuilder train``), the server stops by
    itself after that many seconds without a request.

    Raises:
        MissingDependencyError: the [portal] extra is not installed.
        InvalidNameError: the workspace name breaks the naming rule.
        InvalidStateError: the port is taken.
    """
    require("fastapi", "portal")
    require("uvicorn", "portal")
    require("jinja2", "portal")
    require("python_multipart", "portal")
    import uvicorn

    from .app import create_app

    port = settings.portal_port() if port is None else port
    if not is_loopback(host):
        message = (
            f"Warning: the portal listens on {host}, so other machines can reach it. It has no login: "
            "anyone who can reach this address can read your runs and download your models."
        )
        logger.warning(message)
        print(message, file=sys.stderr)
    check_port_free(host, port)
    identity = PortalIdentity.new(workspace_name, host, port)
    app = create_app(workspace_name, host=host, port=port, identity=identity)
    shown = f"[{host}]" if ":" in host else host
    print(f"Portal of workspace {workspace_name}: http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)

    class RecordedServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Here, not after run(): uvicorn re-raises SIGTERM once it has shut down, ending the process.
            remove_record(identity)
            await super().shutdown(sockets)

    server = RecordedServer(config)
    if idle_exit_s:
        _stop_when_idle(app, server, idle_exit_s)
    try:
        write_record(identity)
    except OSError as exc:  # the portal still works; launchers then find it on the preferred port only
        logger.warning("Cannot write the portal record: %s", exc)
    try:
        server.run()
    finally:
        remove_record(identity)


def _stop_when_idle(app: Any, server: Any, idle_exit_s: float) -> None:
    """Record each request's time; a daemon thread asks uvicorn to exit after ``idle_exit_s`` of quiet."""
    import threading
    import time

    last = [time.monotonic()]

    @app.middleware("http")
    async def touch(request: Any, call_next: Any) -> Any:
        last[0] = time.monotonic()
        return await call_next(request)

    def watch() -> None:
        while not server.should_exit:
            time.sleep(min(5.0, idle_exit_s / 4))
            if time.monotonic() - last[0] > idle_exit_s:
                logger.info("No request for %.0f s: stopping the portal", idle_exit_s)
                server.should_exit = True

    threading.Thread(target=watch, name="portal-idle-exit", daemon=True).start()
