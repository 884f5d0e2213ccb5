"""The portal: a local web application over the workspaces of this machine (FastAPI + Jinja2).

``ensure_portal`` is importable without FastAPI (the CLI uses it to start a portal on demand);
``create_app`` and ``serve`` need the ``[portal]`` extra and are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .launcher import ensure_portal

if TYPE_CHECKING:
    from .app import create_app
    from .server import serve

__all__ = ["create_app", "ensure_portal", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(f"module 'modelbuilder.portal' has no attribute {name!r}")
