"""Ray Jobs for training runs: submit one job per run (idempotently), read its state and its log.

One run is one Ray job with ``submission_id = "mb-<run_id>"``: submitting again finds the job instead of
starting a second one. The job runs ``python -m modelbuilder.compute.ray.entrypoint``; this package
travels in the job's ``runtime_env`` (``py_modules``), so the cluster runs the submitter's version of
the code (its Python environment must have the training dependencies: ``pip install
"modelbuilder[train]"`` on the cluster's image). A data folder the cluster cannot read is uploaded as the
job's ``working_dir``: Ray names the upload by its content hash, so the same folder is uploaded once.
Ray refuses uploads over about 100 MiB; the size is checked first, with a clear error.
"""

from __future__ import annotations

import enum
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...entities import ComputeSize
from ...errors import ComputeError
from .cluster import ClusterUnreachableError, RayCluster
from .jobspec import RayJobSpec

#: Ray keeps runtime_env packages in its GCS, bounded by the gRPC message size (about 100 MiB here).
UPLOAD_LIMIT_BYTES = 100 * 2**20
#: Seconds a canceled job has, after SIGTERM, to stop at a safe point and print its partial result.
STOP_WAIT_S = 60
#: Extra package folders (os.pathsep-separated) shipped with every job, e.g. a custom trainer's package.
EXTRA_MODULES_ENV = "MODELBUILDER_RAY_PY_MODULES"
#: Names of environment variables (comma-separated) whose values the job gets too.
FORWARD_ENV = "MODELBUILDER_RAY_FORWARD_ENV"
_SKIP_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def submission_id(run_id: str) -> str:
    return f"mb-{run_id}"


class JobState(str, enum.Enum):
    """A Ray job's status (``ray.job_submission.JobStatus``), plus ``UNKNOWN``: the cluster forgot it."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobInfo:
    state: JobState
    message: str = ""


def folder_size(path: Path) -> int:
    """Bytes of the files Ray would upload from ``path`` (caches left out, as Ray's excludes do)."""
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        total += sum((Path(root) / name).stat().st_size for name in files)
    return total


def check_upload_size(path: Path, what: str) -> int:
    """The size of ``path``; raises when Ray would refuse to upload it.

    Raises:
        ComputeError: over ``UPLOAD_LIMIT_BYTES``.
    """
    size = folder_size(path)
    if size > UPLOAD_LIMIT_BYTES:
        raise ComputeError(
            f"{what} {str(path)!r} is {size / 2**20:.0f} MiB; Ray uploads at most "
            f"{UPLOAD_LIMIT_BYTES / 2**20:.0f} MiB with a job.",
            hint="Put the data on a filesystem the cluster nodes can read (the same path on every node) "
            "and train from that path, or make the folder smaller.",
        )
    return size


def package_folder() -> Path:
    """The folder of the ``modelbuilder`` package that is shipped with each job."""
    import modelbuilder

    return Path(modelbuilder.__file__).resolve().parent


def _forwarded() -> dict[str, str]:
    names = {"MODELBUILDER_RAY_HEARTBEAT_S", *os.environ.get(FORWARD_ENV, "").split(",")}
    return {name: os.environ[name] for name in sorted(names) if name and name in os.environ}


def runtime_env(upload_data: Path | None) -> dict[str, Any]:
    """The job's runtime environment: this package (and any extra modules), unbuffered output, no log
    deduplication (event lines must all arrive), a long enough stop grace; the data when uploaded."""
    modules = [package_folder()]
    modules += [Path(p) for p in os.environ.get(EXTRA_MODULES_ENV, "").split(os.pathsep) if p]
    for module in modules:
        check_upload_size(module, "The package folder")
    env: dict[str, Any] = {
        "py_modules": [str(m) for m in modules],
        "env_vars": {
            "RAY_DEDUP_LOGS": "0",
            "PYTHONUNBUFFERED": "1",
            "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S),
            "MODELBUILDER_OFFLINE": os.environ.get("MODELBUILDER_OFFLINE", "0"),
            **_forwarded(),
        },
    }
    if upload_data is not None:
        check_upload_size(upload_data, "The training data folder")
        env["working_dir"] = str(upload_data)
    return env


def _is_missing(exc: Exception) -> bool:
    text = str(exc)
    return "404" in text or "does not exist" in text or "not found" in text.lower()


def get_job(client: Any, run_id: str) -> JobInfo:
    """The state of the run's job (``UNKNOWN`` when the cluster does not know it)."""
    try:
        info = client.get_job_info(submission_id(run_id))
    except OSError as exc:  # requests' connection errors and timeouts
        raise ClusterUnreachableError(f"The Ray cluster does not answer: {exc}", hint=None) from None
    except RuntimeError as exc:
        if _is_missing(exc):
            return JobInfo(JobState.UNKNOWN, "the Ray cluster does not know the job")
        raise ClusterUnreachableError(
            f"The state of Ray job {submission_id(run_id)} cannot be read: {exc}", hint=None
        ) from None
    return JobInfo(JobState(str(info.status.value)), info.message or "")


def submit(
    cluster: RayCluster,
    spec: RayJobSpec,
    size: ComputeSize,
    *,
    upload_data: Path | None = None,
    client: Any | None = None,
) -> str:
    """Submit the run's job unless it exists already; its submission id.

    The entrypoint asks for the size's vCPUs and GPUs, so a job runs only where the whole size fits (a
    data-parallel job's entrypoint asks for nothing: its training workers ask for the size).

    Raises:
        ComputeError: the package or the data is too large to upload, or the cluster refused the job.
        ClusterUnreachableError: the cluster does not answer.
    """
    client = client or cluster.job_client()
    job_id = submission_id(spec.run_id)
    if get_job(client, spec.run_id).state is not JobState.UNKNOWN:
        return job_id
    entrypoint = shlex.join(["python", "-m", "modelbuilder.compute.ray.entrypoint", spec.to_argument()])
    try:
        client.submit_job(
            entrypoint=entrypoint,
            submission_id=job_id,
            runtime_env=runtime_env(upload_data),
            metadata={"modelbuilder_run": spec.run_id},
            entrypoint_num_cpus=spec.entrypoint_resources(size)[0],
            entrypoint_num_gpus=spec.entrypoint_resources(size)[1],
        )
    except OSError as exc:
        raise ClusterUnreachableError(
            f"The Ray cluster at {cluster.address} does not answer: {exc}", hint=None
        ) from None
    except RuntimeError as exc:
        if "already exists" in str(exc):  # submitted meanwhile by another process: the same job
            return job_id
        raise ComputeError(
            f"The Ray cluster at {cluster.address} refused job {job_id}: {str(exc)[-500:]}",
            hint="Check the cluster's dashboard and logs (ray job logs " + job_id + ").",
        ) from None
    return job_id


def job_logs(client: Any, run_id: str) -> str:
    """The job's whole log so far ("" when there is none yet)."""
    try:
        return str(client.get_job_logs(submission_id(run_id)))
    except OSError as exc:
        raise ClusterUnreachableError(f"The Ray cluster does not answer: {exc}", hint=None) from None
    except RuntimeError as exc:
        if _is_missing(exc):
            return ""
        raise ClusterUnreachableError(
            f"The log of Ray job {submission_id(run_id)} cannot be read: {exc}", hint=None
        ) from None


def stop(client: Any, run_id: str) -> bool:
    """Ask Ray to stop the job (SIGTERM, then SIGKILL after ``STOP_WAIT_S``); False if it had ended."""
    try:
        return bool(client.stop_job(submission_id(run_id)))
    except OSError as exc:
        raise ClusterUnreachableError(f"The Ray cluster does not answer: {exc}", hint=None) from None
    except RuntimeError as exc:
        if _is_missing(exc):
            return False
        raise
