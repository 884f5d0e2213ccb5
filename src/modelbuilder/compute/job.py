"""What a compute backend is asked to run (``TrainingJob``) and where a local run keeps its files.

A job is plain JSON (versioned), so it crosses process boundaries unchanged: the local backend writes it
next to the run's worker files and passes the path to ``python -m modelbuilder.compute.worker``; a Ray
backend ships the same dict to its task.

Layout of a workspace's local files (``workspace_folder(ws)`` is the folder that holds the artifact root)::

    <workspace folder>/
      artifacts/<run_id>/...           recorded artifacts (the artifact store)
      checkpoints/<run_id>/            trainer checkpoints, kept until the run (or its resume) completes
      workers/<run_id>/job.json        the job
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

JOB_FORMAT_VERSION = 1
#: The trainer a job runs unless it names another one (``module:function``, same signature).
DEFAULT_TRAINING_TARGET = "modelbuilder.training.trainer:run_training"


@dataclass(frozen=True)
class RunFolders:
    """Where one run's local files live, inside its workspace folder."""

    workspace_folder: Path
    run_id: str

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
class TrainingJob:
    """One training run for a backend to execute.

    Args:
        run_id: the run, already ``Queued`` in the store.
        workspace: the workspace name.
        store_url: the workspace's metadata store (the worker opens it itself).
        artifact_root: the workspace's artifact root.
        config: ``TrainingConfig.to_dict()``.
        state_dir: the run's worker folder (job, worker record, raw output, run log, work dir).
        checkpoint_dir: where the trainer saves and finds checkpoints (None: no checkpoints).
        target: ``module:function`` of the trainer (``run_training``'s signature).
        compute: the compute's name.
    """

    run_id: str
    workspace: str
    store_url: str
    artifact_root: str
    config: dict[str, Any]
    state_dir: str
    checkpoint_dir: str | None = None
    target: str = DEFAULT_TRAINING_TARGET
    compute: str = "local"
    format_version: int = JOB_FORMAT_VERSION

    @property
    def work_dir(self) -> Path:
        return Path(self.state_dir) / "work"

    @property
    def log_path(self) -> Path:
        return Path(self.state_dir) / "run.log"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingJob:
        """Rebuild a job.

        Raises:
            InvalidParameterError: the job was written by a newer modelbuilder, or is malformed.
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
