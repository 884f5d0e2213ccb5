"""Paths, environment variables and regions, read in one place.

Environment variables (all optional):

- ``MODELBUILDER_HOME``: root of workspaces, caches and settings (default ``~/.modelbuilder``).
- ``MODELBUILDER_WORKSPACE``: default workspace name for the CLI and Python API (default ``default``).
- ``MODELBUILDER_OFFLINE``: ``1`` forbids any network access (weights downloads raise OfflineModeError).
- ``MODELBUILDER_DEBUG``: ``1`` makes the CLI print full tracebacks.
- ``MODELBUILDER_NO_PROGRESS``: ``1`` disables progress bars.
- ``MODELBUILDER_PORTAL_PORT``: the port a portal prefers (default 8765); when another program (or the
  portal of another ``MODELBUILDER_HOME``) holds it, the launcher picks a free port instead.
- ``MODELBUILDER_PORTAL_URL``: the address of a portal you run yourself (behind a proxy, say); "Monitor
  current run" links then use it as given instead of finding or starting a local portal.
- ``MODELBUILDER_PORTAL_DATA_ROOTS``: folders (separated by ``os.pathsep``) whose data the portal's folder
  picker may list and train on; ``modelbuilder portal --data-root DIR`` sets it. None by default.
- ``MODELBUILDER_PORTAL_TOKEN``: an access token the portal requires from every request (a bearer header,
  or a cookie set by opening any page once with ``?access_token=TOKEN``) when it listens on an address other
  machines can reach (``--host``); such a portal does not start without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidParameterError, NotFoundError

DEFAULT_PORTAL_PORT = 8765
DEFAULT_WORKSPACE = "default"
DEFAULT_RESOURCE_GROUP = "default"
DEFAULT_REGION = "local"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def home() -> Path:
    """Root folder of everything modelbuilder stores on this machine."""
    value = os.environ.get("MODELBUILDER_HOME")
    return Path(value).expanduser().resolve() if value else Path.home() / ".modelbuilder"


def default_workspace_name() -> str:
    return os.environ.get("MODELBUILDER_WORKSPACE") or DEFAULT_WORKSPACE


def offline() -> bool:
    return _flag("MODELBUILDER_OFFLINE") or _flag("HF_HUB_OFFLINE")


def debug() -> bool:
    return _flag("MODELBUILDER_DEBUG")


def progress_enabled() -> bool:
    return not _flag("MODELBUILDER_NO_PROGRESS")


def portal_port() -> int:
    """The port a portal prefers: ``MODELBUILDER_PORTAL_PORT`` or 8765.

    Raises:
        InvalidParameterError: the variable is not a port number.
    """
    value = os.environ.get("MODELBUILDER_PORTAL_PORT", "").strip()
    if not value:
        return DEFAULT_PORTAL_PORT
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise InvalidParameterError(
            f"MODELBUILDER_PORTAL_PORT must be a port number (1-65535). Got {value!r} instead.",
            hint="Set it to a free port such as 8765, or unset it.",
        )
    return int(value)


def portal_url_override() -> str | None:
    """``MODELBUILDER_PORTAL_URL`` without a trailing slash, or None when unset."""
    value = os.environ.get("MODELBUILDER_PORTAL_URL", "").strip()
    return value.rstrip("/") or None


def portal_base_url() -> str:
    """The configured portal address (``MODELBUILDER_PORTAL_URL``, else 127.0.0.1 on ``portal_port()``).

    Only a guess at where a portal would be: links that must answer come from
    ``modelbuilder.portal.launcher``, which checks who serves the port.
    """
    return portal_url_override() or f"http://127.0.0.1:{portal_port()}"


PORTAL_DATA_ROOTS_ENV = "MODELBUILDER_PORTAL_DATA_ROOTS"


def portal_data_roots() -> list[Path]:
    """The folders the portal's folder picker may read (``MODELBUILDER_PORTAL_DATA_ROOTS``); none by
    default."""
    value = os.environ.get(PORTAL_DATA_ROOTS_ENV, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


PORTAL_TOKEN_ENV = "MODELBUILDER_PORTAL_TOKEN"


def portal_access_token() -> str | None:
    """The portal's access token (``MODELBUILDER_PORTAL_TOKEN``), or None when it has none."""
    return os.environ.get(PORTAL_TOKEN_ENV, "").strip() or None


def cache_dir() -> Path:
    """Weights and feature caches (shared by all workspaces of this machine)."""
    return home() / "cache"


def weights_cache_dir() -> Path:
    return cache_dir() / "weights"


def features_cache_dir() -> Path:
    return cache_dir() / "features"


@dataclass(frozen=True, slots=True)
class Region:
    """A location: where workspaces store their files and, optionally, the default Ray cluster."""

    name: str
    storage_root: Path
    ray_address: str | None = None


def regions() -> dict[str, Region]:
    """Regions from ``$MODELBUILDER_HOME/regions.json`` plus ``local`` (always present).

    The file maps a region name to ``{"storage_root": "...", "ray_address": "..."}``.
    """
    found = {DEFAULT_REGION: Region(DEFAULT_REGION, home() / "workspaces")}
    path = home() / "regions.json"
    if path.is_file():
        for name, spec in json.loads(path.read_text(encoding="utf-8")).items():
            found[name] = Region(
                name,
                Path(spec["storage_root"]).expanduser(),
                spec.get("ray_address"),
            )
    return found


def get_region(name: str) -> Region:
    found = regions()
    if name not in found:
        raise NotFoundError(
            f"Region '{name}' is not defined. Known regions: {', '.join(sorted(found))}.",
            hint=f"Use one of those, or define it in {home() / 'regions.json'} as "
            '{"' + name + '": {"storage_root": "/path", "ray_address": null}}',
        )
    return found[name]


def portal_run_url(workspace: str, run_id: str, base_url: str | None = None) -> str:
    """The portal page of a run ("Monitor current run"): ``<base>/workspaces/<ws>/runs/<id>``."""
    return f"{(base_url or portal_base_url()).rstrip('/')}/workspaces/{workspace}/runs/{run_id}"
