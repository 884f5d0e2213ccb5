"""Paths, environment variables and regions, read in one place.

Environment variables (all optional):

- ``MODELBUILDER_HOME``: root of workspaces, caches and settings (default ``~/.modelbuilder``).
- ``MODELBUILDER_WORKSPACE``: default workspace name for the CLI and Python API (default ``default``).
- ``MODELBUILDER_OFFLINE``: ``1`` forbids any network access (weights downloads raise OfflineModeError).
- ``MODELBUILDER_DEBUG``: ``1`` makes the CLI print full tracebacks.
- ``MODELBUILDER_NO_PROGRESS``: ``1`` disables progress bars.
- ``MODELBUILDER_PORTAL_URL``: base URL used in "Monitor current run" links (default http://127.0.0.1:8765).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import NotFoundError

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


def portal_base_url() -> str:
    value = os.environ.get("MODELBUILDER_PORTAL_URL")
    return (value or f"http://127.0.0.1:{DEFAULT_PORTAL_PORT}").rstrip("/")


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
