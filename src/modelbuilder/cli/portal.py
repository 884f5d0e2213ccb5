"""``modelbuilder portal``: serve the local web portal of a workspace."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from .. import settings
from ..errors import DatasetError, MissingDependencyError
from ..portal.launcher import find_portal, free_port, port_is_free
from ..services.workspaces import resolve_workspace
from ._common import WorkspaceOption, message


def portal(
    host: Annotated[str, typer.Option(help="Address to listen on (keep 127.0.0.1 unless you mean it).")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Default: $MODELBUILDER_PORTAL_PORT or 8765, or a free port when another program holds it.",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    data_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="A folder whose sub-folders the portal may list and train on (repeatable). Without it the "
            "browser can only upload data.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the portal: runs, metrics, logs and artifacts of a workspace, live."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise MissingDependencyError(
            "The portal needs FastAPI and uvicorn, which are not installed.",
            hint='Install them with: pip install "modelbuilder[portal]"',
        )
    name = resolve_workspace(workspace).name
    if data_root:
        for folder in data_root:
            if not folder.expanduser().is_dir():
                raise DatasetError(f"The data root {str(folder)!r} is not a folder.",
                                   hint="Give an existing folder to --data-root.")
        # Read by the app (settings.portal_data_roots), so the server's signature stays as it is.
        os.environ[settings.PORTAL_DATA_ROOTS_ENV] = os.pathsep.join(
            str(folder.expanduser().resolve()) for folder in data_root
        )
    if port is None:
        port = settings.portal_port()
        if _is_loopback(host) and not data_root:  # a running portal would not have these data roots
            running = find_portal()
            if running is not None:
                # One portal serves every workspace of this home: a second one would only take another port.
                message(f"The portal of this MODELBUILDER_HOME already runs: {running}/workspaces/{name}")
                return
        if not port_is_free(port):
            taken, port = port, free_port()
            message(f"Port {taken} is in use (another program, or the portal of another home); using {port}.")
    from ..portal.server import serve

    serve(name, host, port)


def _is_loopback(host: str) -> bool:
    # Not portal.security's: that module needs FastAPI, which the CLI must not import up front.
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
