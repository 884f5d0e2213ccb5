"""``modelbuilder portal``: serve the local web portal of a workspace."""

from __future__ import annotations

import importlib.util
from typing import Annotated

import typer

from .. import settings
from ..errors import MissingDependencyError
from ..services.workspaces import resolve_workspace
from ._common import WorkspaceOption


def portal(
    host: Annotated[str, typer.Option(help="Address to listen on (keep 127.0.0.1 unless you mean it).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = settings.DEFAULT_PORTAL_PORT,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve the portal: runs, metrics, logs and artifacts of a workspace, live."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise MissingDependencyError(
            "The portal needs FastAPI and uvicorn, which are not installed.",
            hint='Install them with: pip install "modelbuilder[portal]"',
        )
    from ..portal.server import serve

    serve(resolve_workspace(workspace).name, host, port)
