"""A run's files: its recorded artifacts, the finished files in its folder, and their real paths.

The CLI (``run show``, ``run download``), the Python API (``Run.get_details``) and the portal (the run's
results, downloads, evaluation and "Try the model") read a run's files through these functions, so every
presentation layer lists and serves the same files by the same path-safety rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..entities import Artifact
from ..errors import ArtifactNotFoundError, InvalidParameterError
from .workspaces import WorkspaceSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFile:
    """A finished file in a run's artifact folder.

    Attributes:
        path: its name relative to the run's folder (``logs/run.log``).
        size: its size in bytes (the recorded size when there is a record).
        sha256: the recorded checksum; None for a file that has no record (yet): the worker records a file
            only after writing it completely, and the run log is written as the run goes.
    """

    path: str
    size: int
    sha256: str | None


def list_artifacts(session: WorkspaceSession, run_id: str) -> list[Artifact]:
    """The recorded artifacts of a run (``run_id``: a full id), by path: complete files only."""
    return session.store.list_artifacts(run_id)


def list_run_files(session: WorkspaceSession, run_id: str) -> list[RunFile]:
    """Every finished file in the run's artifact folder (``run_id``: a full id), by path, with the recorded
    size and sha256 where there is a record. A file that vanishes while listing, or a link that leads out of
    the run's folder, is left out."""
    recorded = {record.path: record for record in session.store.list_artifacts(run_id)}
    found = []
    for path in session.artifacts.list_files(run_id):
        record = recorded.get(path)
        if record is not None:
            found.append(RunFile(path, record.size, record.sha256))
            continue
        try:
            size = session.artifacts.resolve(run_id, path).stat().st_size
        except (OSError, ArtifactNotFoundError, InvalidParameterError) as exc:
            logger.debug("Leaving out %s of run %s: %s", path, run_id, exc)
            continue
        found.append(RunFile(path, size, None))
    return found


def artifact_path(session: WorkspaceSession, run_id: str, name: str) -> Path:
    """The real path of one of a run's files, for reading or serving it.

    Raises:
        InvalidParameterError: the run id or name is unsafe (absolute, ``..``, a link out of the folder).
        ArtifactNotFoundError: the run's folder has no such file.
    """
    return session.artifacts.resolve(run_id, name)


def find_artifact_path(session: WorkspaceSession, run_id: str, name: str) -> Path | None:
    """The real path of one of a run's files, or None when it has no such (safe) file."""
    try:
        return artifact_path(session, run_id, name)
    except (ArtifactNotFoundError, InvalidParameterError):
        return None
