"""What a compute backend is asked to run (``TrainingJob``) and where a local run keeps its files.

A job is plain JSON (versioned), so it crosses process boundaries unchanged. It is built from the run
(``services.training_run.job_for_run``), so no file has to exist before a backend is asked about a run;
the local backend writes it next to its worker's files for ``python -m modelbuilder.compute.worker``.

Layout of a workspace's local files on this machine (``RunFolders``; the workspace folder is the one that
holds the artifact root)::

    <workspace folder>/
      artifacts/<run_id>/...           recorded artifacts (the artifact store)
      checkpoints/<run_id>/            trainer checkpoints, kept until the run (or its resume) completes
      workers/<run_id>/job.json        the job, as the local backend hands it to its worker
      workers/<run_id>/worker.json     pid, host and process start time of the worker (``WorkerRecord``)
      workers/<run_id>/worker.out      the worker's raw stdout/stderr (crash tracebacks land here)
      workers/<run_id>/run.log         the run log as the worker writes it (uploaded as logs/run.log)
      workers/<run_id>/work/           the trainer's work_dir (outputs before they are recorded)
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError
from ..fileio import atomic_write_text

#: 2: no local folders in the job (backends place them), checkpoint_key and origin_host.
JOB_FORMAT_VERSION = 2
#: The trainer a job runs unless it names another one (``module:function``, same signature).
DEFAULT_TRAINING_TARGET = "modelbuilder.training.trainer:run_training"


@dataclass(frozen=True)
class TrainingJob:
    """One training run for a backend to execute: what the run needs, not where this machine keeps it.

    Local folders are not part of a job: each backend places the run's working files itself (the local
    backend in ``RunFolders.of_job(job)``; Ray on its cluster). Output goes to the run's artifacts in the
    workspace's artifact store, however the backend gets it there.

    Args:
        run_id: the run, already ``Queued`` in the store.
        workspace: the workspace name.
        store_url: the workspace's metadata store, for workers that write to it themselves (local). A
            backend whose workers ship events instead (Ray) must not send it to them.
        artifact_root: the workspace's artifact root (where the run's outputs end up).
        config: ``TrainingConfig.to_dict()``. Its paths (``data``, ``validation_data``, ``weights``) are
            paths on ``origin_host``; a backend that runs elsewhere resolves them (shared path or upload).
        target: ``module:function`` of the trainer (``run_training``'s signature).
        compute: the compute's name.
        checkpoint_key: the run whose checkpoints this run continues (a resume); None: its own.
        origin_host: the machine that submitted the job (where the config's paths are).
    """

    run_id: str
    workspace: str
    store_url: str
    artifact_root: str
    config: dict[str, Any]
    target: str = DEFAULT_TRAINING_TARGET
    compute: str = "local"
    checkpoint_key: str | None = None
    origin_host: str = field(default_factory=socket.gethostname)
    format_version: int = JOB_FORMAT_VERSION

    @property
    def checkpoint_owner(self) -> str:
        """The run id whose checkpoints the trainer saves and finds."""
        return self.checkpoint_key or self.run_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingJob:
        """Rebuild a job.

        Raises:
            InvalidParameterError: the job was written by another modelbuilder version, or is malformed.
        """
        version = data.get("format_version")
        if version != JOB_FORMAT_VERSION:
            raise InvalidParameterError(
                f"The training job has format version {version!r}; this modelbuilder reads version "
                f"{JOB_FORMAT_VERSION}.",
                hint="Run the worker with the same modelbuilder version that submitted the job.",
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidParameterError(
                f"The training job is malformed: {exc}.", hint="Submit the run again."
            ) from exc

    def save(self, path: Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainingJob:
        """Read a job file.

        Raises:
            InvalidParameterError: the file is missing, not JSON, or not a job of this version.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidParameterError(
                f"The training job file {os.fspath(path)!r} cannot be read: {exc}.",
                hint="Submit the run again.",
            ) from exc
        if not isinstance(data, dict):
            raise InvalidParameterError(
                f"The training job file {os.fspath(path)!r} does not hold a JSON object.",
                hint="Submit the run again.",
            )
        return cls.from_dict(data)


@dataclass(frozen=True)
class RunFolders:
    """Where one run's files live on this machine, inside its workspace folder (the local backend's
    placement; the layout is in the module doc)."""

    workspace_folder: Path
    run_id: str

    @classmethod
    def of_job(cls, job: TrainingJob) -> RunFolders:
        """The folders of ``job``'s run: the workspace folder is its artifact root's parent (as in
        ``store.catalog.workspace_folder``)."""
        return cls(Path(job.artifact_root).parent, job.run_id)

    @property
    def state_dir(self) -> Path:
        return self.workspace_folder / "workers" / self.run_id

    @property
    def job_path(self) -> Path:
        return self.state_dir / "job.json"

    @property
    def worker_path(self) -> Path:
        return self.state_dir / "worker.json"

    @property
    def output_path(self) -> Path:
        return self.state_dir / "worker.out"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "run.log"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"

    def checkpoint_dir(self, owner_run_id: str | None = None) -> Path:
        """The checkpoint folder of ``owner_run_id`` (default: this run); resumes share it."""
        return self.workspace_folder / "checkpoints" / (owner_run_id or self.run_id)


@dataclass(frozen=True)
class WorkerRecord:
    """Which process runs a run: enough for another process to tell whether it is still alive.

    ``create_time`` (the process start time) guards against a recycled pid.
    """

    run_id: str
    pid: int
    host: str = field(default_factory=socket.gethostname)
    create_time: float = 0.0
    backend: str = "local"

    def save(self, path: Path) -> Path:
        return atomic_write_text(path, json.dumps(asdict(self), sort_keys=True))

    @classmethod
    def find(cls, path: Path) -> WorkerRecord | None:
        """The record at ``path``, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()
