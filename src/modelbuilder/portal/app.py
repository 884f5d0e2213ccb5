"""``create_app``: the portal's FastAPI application over the workspaces of this machine.

The app serves every workspace in the catalog (run addresses carry the workspace name, so a portal started
for one workspace also opens the "Monitor current run" links of another); ``workspace_name`` is the one it
was started for. Middleware, outermost first: Host check, body size limit, security headers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ..errors import InvalidParameterError, InvalidStateError
from ..hints import command
from ..names import check_workspace_name
from ..services import workspaces as workspace_service
from ..services.datasets import DEFAULT_LIMITS, UploadLimits
from ..services.workspaces import CatalogSession
from ..settings import DEFAULT_PORTAL_PORT, PORTAL_TOKEN_ENV, portal_access_token, portal_data_roots
from .context import PortalState
from .datasources import WizardState
from .errors import install_error_handlers
from .folders import DataRoots
from .identity import PortalIdentity
from .results import MAX_UPLOAD_BYTES
from .routers import catalog as catalog_routes
from .routers import datasets, pages, results, runs, wizard, wizard_pages
from .security import (
    MIN_ACCESS_TOKEN_LENGTH,
    AccessTokenMiddleware,
    BodyLimitMiddleware,
    HostCheckMiddleware,
    HostPolicy,
    SecurityHeadersMiddleware,
    is_loopback,
)

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
#: Room for the multipart envelope around a maximal upload.
_MULTIPART_SLACK = 64 * 1024


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _number(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _time(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))
    templates.env.filters.update(
        duration=_duration, percent=_percent, number=_number, utc=_time, filesize=_size
    )
    return templates


def create_app(
    workspace_name: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORTAL_PORT,
    extra_hosts: Iterable[str] = (),
    catalog: CatalogSession | None = None,
    identity: PortalIdentity | None = None,
    data_roots: Iterable[str | Path] | None = None,
    upload_limits: UploadLimits = DEFAULT_LIMITS,
    access_token: str | None = None,
) -> FastAPI:
    """The portal app for ``workspace_name`` as served on ``host``:``port``.

    ``host`` and ``port`` are those the server binds: requests whose Host header names anything else
    are refused, and state-changing requests must come from that origin.

    Args:
        workspace_name: the workspace the portal starts on (it need not exist yet).
        host: the bound address (127.0.0.1 by default).
        port: the bound port.
        extra_hosts: more Host names to accept (a reverse proxy's name).
        catalog: the machine's catalog (default: the one under MODELBUILDER_HOME).
        identity: who this portal is, for ``/api/health`` (default: a new one for this process and home).
        data_roots: folders the folder picker may read (default: ``settings.portal_data_roots()``).
        upload_limits: what one dataset upload may hold.
        access_token: a token every request must carry (default: ``MODELBUILDER_PORTAL_TOKEN`` when ``host``
            is not a loopback address, where a token is required: the portal starts training and stores
            uploads).

    Raises:
        InvalidNameError: the workspace name breaks the workspace name rule.
        InvalidStateError: ``host`` is reachable from other machines and there is no access token.
        InvalidParameterError: the access token is too short to be safe.
    """
    check_workspace_name(workspace_name)
    # The environment's token guards portals that other machines can reach; a loopback portal (the one
    # `modelbuilder train` starts for its "Monitor current run" link) stays open to this machine's browser.
    token = access_token if access_token is not None else None if is_loopback(host) else portal_access_token()
    _check_access(host, token)
    policy = HostPolicy(host, port, extra_hosts)
    state = PortalState(workspace_name, policy, catalog)
    if workspace_service.find_workspace(workspace_name, catalog=state.catalog) is None:
        logger.warning("Workspace %s does not exist yet; the portal shows it once it does", workspace_name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(
        title="modelbuilder portal",
        description="Monitor runs, review models and download their outputs. Every page's data is "
        "available here as JSON.",
        version="1",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; /api-docs is served locally
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.portal = state
    app.state.identity = identity or PortalIdentity.new(workspace_name, host, port)
    app.state.templates = make_templates()
    roots = DataRoots(portal_data_roots() if data_roots is None else data_roots)
    app.state.wizard = WizardState(roots, upload_limits)
    install_error_handlers(app, app.state.templates)
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")
    for module in (catalog_routes.router, runs.router, results.router, datasets.router, wizard.router,
                   wizard_pages.router, pages.router):
        app.include_router(module)
    # add_middleware wraps: the last added runs first.
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=MAX_UPLOAD_BYTES + _MULTIPART_SLACK,
        describe_limit=f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB per image",
        larger=[(datasets.UPLOAD_SUFFIX,
                 # Each dropped file adds a multipart header of its own (~200 bytes).
                 upload_limits.max_upload_bytes + _MULTIPART_SLACK + 512 * upload_limits.max_files,
                 f"{upload_limits.max_upload_bytes // (1024 * 1024)} MB per dataset upload",
                 "Upload less at a time, or put the data in a folder the portal may read and pick it there: "
                 f"{command('portal', data_root='DIR')}")],
    )
    if token:
        app.add_middleware(AccessTokenMiddleware, token=token)
    app.add_middleware(HostCheckMiddleware, policy=policy)
    return app


def _check_access(host: str, token: str | None) -> None:
    """A portal other machines can reach starts runs and takes uploads: it needs an access token."""
    if token is not None and len(token) < MIN_ACCESS_TOKEN_LENGTH:
        raise InvalidParameterError(
            f"The portal's access token has {len(token)} characters; it needs at least "
            f"{MIN_ACCESS_TOKEN_LENGTH}.",
            hint=f"Set {PORTAL_TOKEN_ENV} to a long random value, e.g. the output of: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    if token is None and not is_loopback(host):
        raise InvalidStateError(
            f"The portal would listen on {host}, where other machines can reach it, without an access "
            "token; it can start training runs and store uploads, so it refuses.",
            hint=f"Set {PORTAL_TOKEN_ENV} to a long random secret (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))') and open the portal with ?access_token=SECRET, or keep "
            "--host 127.0.0.1 (the default).",
        )
