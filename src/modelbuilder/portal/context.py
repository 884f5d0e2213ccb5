"""What one portal server holds: the catalog, the open workspaces, caches, its host policy and token.

The portal is a presentation layer over the services, like the CLI: the catalog is held open
(``services.workspaces.open_catalog``) and a workspace is opened with ``services.workspaces.open_session``
on first use and kept for the server's life (SQLAlchemy pools are thread-safe; FastAPI runs our endpoints
in a thread pool); every read and write passes these sessions to a ``services`` function (runs are read,
canceled and reaped through ``services.runs``, so the cancel and lost-run rules are the CLI's own). No
portal module calls a store itself: ``tests/portal/test_portal_layering.py`` checks it. Everything
expensive to rebuild (parsed evaluations, prediction engines, thumbnails) is cached with the file's mtime
and size in the key, so a rewritten file is read again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from fastapi import Request

from ..entities import Run, Workspace
from ..errors import ArtifactNotFoundError, ModelBuilderError
from ..services import artifacts as artifact_service
from ..services import runs as run_service
from ..services import workspaces as workspace_service
from ..services.workspaces import CatalogSession, WorkspaceSession
from .security import HostPolicy, new_csrf_token

logger = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

EVALUATION_NAME = "evaluation.json"
#: Seconds between two reaps of one workspace's lost runs (reads in between do not reap).
REAP_INTERVAL_S = 5.0
MODEL_BUNDLE_NAME = "MLModel.zip"


class LruCache(Generic[K, V]):
    """A small thread-safe LRU cache bounded by entry count and by total size (``weigh``)."""

    def __init__(
        self, max_entries: int, max_weight: int | None = None, weigh: Callable[[V], int] | None = None
    ) -> None:
        self.max_entries = max_entries
        self.max_weight = max_weight
        self._weigh = weigh
        self._items: OrderedDict[K, V] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if key in self._items:
                self._weight -= self._weight_of(self._items.pop(key))
            self._items[key] = value
            self._weight += self._weight_of(value)
            while self._items and (
                len(self._items) > self.max_entries
                or (self.max_weight is not None and self._weight > self.max_weight)
            ):
                _, dropped = self._items.popitem(last=False)
                self._weight -= self._weight_of(dropped)

    def _weight_of(self, value: V) -> int:
        if self.max_weight is None:
            return 0
        return self._weigh(value) if self._weigh is not None else len(value)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._items)


def file_key(path: Path) -> tuple[str, int, int]:
    """Identity of a file's current content: path, mtime (ns) and size."""
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


class PortalState:
    """The server-wide state of one portal app.

    Args:
        workspace: the workspace the portal was started for (the home page starts there).
        policy: which Host headers and origins name this portal.
        catalog: the machine's catalog, held open (default: the one under MODELBUILDER_HOME).
    """

    def __init__(self, workspace: str, policy: HostPolicy, catalog: CatalogSession | None = None) -> None:
        self.default_workspace = workspace
        self.policy = policy
        self.csrf_token = new_csrf_token()
        self.catalog = catalog if catalog is not None else workspace_service.open_catalog()
        self._owns_catalog = catalog is None
        self._sessions: dict[str, WorkspaceSession] = {}
        self._reaped_at: dict[str, float] = {}
        self._reap_lock = threading.Lock()
        self._lock = threading.Lock()
        self.evaluations: LruCache[tuple[str, int, int], dict[str, Any]] = LruCache(16)
        self.engines: LruCache[tuple[str, int, int], Any] = LruCache(3)
        self.thumbnails: LruCache[tuple[Any, ...], bytes] = LruCache(4096, 64 << 20, len)
        self._engine_lock = threading.Lock()

    # --- workspaces -------------------------------------------------------------------------------

    def workspace(self, name: str) -> Workspace:
        """The catalog entry of a workspace.

        Raises:
            WorkspaceNotFoundError: none has this name.
        """
        return workspace_service.get_workspace(name, catalog=self.catalog)

    def session(self, name: str) -> WorkspaceSession:
        """The open workspace (``services.workspaces.open_session``, as the CLI gets it), opened once; lost
        runs in it are reaped first (see ``reap``).

        Raises:
            WorkspaceNotFoundError: none has this name.
        """
        workspace = self.workspace(name)
        key = workspace.name.lower()
        with self._lock:
            opened = self._sessions.get(key)
            if opened is None:
                opened = workspace_service.open_session(workspace)
                self._sessions[key] = opened
        self.reap(opened)
        return opened

    def reap(self, session: WorkspaceSession, *, now: float | None = None) -> None:
        """Mark the workspace's lost runs ``Failed (process lost)``, at most every ``REAP_INTERVAL_S``.

        The portal reaps as it reads, so a run whose worker was killed shows as lost the next time anyone
        looks at it, with no CLI command run and no background thread writing when nobody looks. The
        reaper only declares a run lost when this process can know: a local worker whose process is gone,
        or a heartbeat older than ``services.runs.STALE_AFTER_S`` (a worker on another host sharing a
        PostgreSQL workspace keeps its run alive by its heartbeats).
        """
        now = time.monotonic() if now is None else now
        key = session.name.lower()
        with self._reap_lock:
            if now - self._reaped_at.get(key, -REAP_INTERVAL_S) < REAP_INTERVAL_S:
                return
            self._reaped_at[key] = now
        try:
            for run in run_service.reap_lost_runs(session):
                logger.warning("Run %s of workspace %s: %s", run.id, session.name, run.error)
        except Exception as exc:  # a read must never fail because the reaper could not do its part
            logger.warning("Reaping lost runs of workspace %s failed: %s", session.name, exc, exc_info=True)

    def run(self, workspace: str, run_id: str) -> Run:
        """A run of a workspace by id or unique id prefix.

        Raises:
            WorkspaceNotFoundError, RunNotFoundError: no such workspace or run.
        """
        return run_service.get_run(self.session(workspace), run_id)

    # --- cached files -----------------------------------------------------------------------------

    def artifact_path(self, workspace: str, run_id: str, name: str) -> Path | None:
        """The real path of a run's artifact, or None when the run has no such (safe) file."""
        return artifact_service.find_artifact_path(self.session(workspace), run_id, name)

    def evaluation(self, workspace: str, run_id: str) -> dict[str, Any] | None:
        """The run's parsed evaluation.json, or None when it has none.

        Raises:
            ArtifactNotFoundError: the file exists but is not valid JSON.
        """
        path = self.artifact_path(workspace, run_id, EVALUATION_NAME)
        if path is None:
            return None
        key = file_key(path)
        cached = self.evaluations.get(key)
        if cached is not None:
            return cached
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactNotFoundError(
                f"The evaluation.json of run '{run_id}' cannot be read: {exc}.",
                hint="The run may still be writing it; reload in a moment.",
            ) from exc
        if not isinstance(data, dict):
            raise ArtifactNotFoundError(
                f"The evaluation.json of run '{run_id}' is not a JSON object.",
                hint="It was not written by modelbuilder's trainer.",
            )
        self.evaluations.put(key, data)
        return data

    def engine(self, workspace: str, run_id: str) -> Any:
        """The run's MLModel.zip loaded as a PredictionEngine (onnxruntime), cached.

        Raises:
            ArtifactNotFoundError: the run has no MLModel.zip (yet).
            BundleError: the bundle is corrupt.
        """
        path = self.artifact_path(workspace, run_id, MODEL_BUNDLE_NAME)
        if path is None:
            raise ArtifactNotFoundError(
                f"Run '{run_id}' has no {MODEL_BUNDLE_NAME} to try.",
                hint="Wait until the run completes; a run that failed before exporting has no model.",
            )
        key = file_key(path)
        with self._engine_lock:
            engine = self.engines.get(key)
            if engine is None:
                from ..pipeline import load_model

                engine = load_model(path, threads=2)
                self.engines.put(key, engine)
            return engine

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for opened in sessions:
            try:
                opened.close()
            except ModelBuilderError:  # pragma: no cover - closing never matters enough to fail
                logger.debug("Closing a store failed", exc_info=True)
        if self._owns_catalog:
            self.catalog.close()


def get_state(request: Request) -> PortalState:
    """FastAPI dependency: the PortalState of the app serving ``request``."""
    state: PortalState = request.app.state.portal
    return state
