"""The ``ray`` backend plugin: provisioning against live node resources, execution as Ray jobs.

- ``validate``: an address is required; a plain ``http://`` address off this machine needs a token
  reference (``--token-env``), which the compute stores (the variable's name, never the token).
- ``check``: connects and checks that one node can hold the size (GPUs, vCPUs, memory); an unreachable
  cluster is a reason (the compute is kept ``Failed``).
- ``start``: submits the run's Ray job (``mb-<run_id>``, idempotent) and starts the local follower that
  carries the job's events into the store (``follow.py``); it returns at once, the job and the follower
  run on without the caller.
- ``find``: the run's job, asked from the cluster, with its follower (restarted if it died).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import psutil

from ...errors import ComputeError, ModelBuilderError
from ..backend import (
    ClusterResources,
    ComputeBackend,
    Fit,
    NodeInfo,
    WorkerHandle,
    WorkerState,
    WorkerStatus,
)
from ..job import RunFolders, TrainingJob, WorkerRecord
from ..local import LocalWorkerHandle
from ..spec import ComputeSpec
from .cluster import ClusterUnreachableError, RayCluster, check_address_security, is_loopback
from .follow import FOLLOW_FILE, FOLLOWER_RECORD, FollowSpec, is_done
from .jobs import JobState, get_job, stop, submission_id, submit
from .jobspec import RayJobSpec, worker_plan
from .resources import cluster_fit_reason, read_nodes

logger = logging.getLogger(__name__)

FOLLOW_MODULE = "modelbuilder.compute.ray.follow"
#: Ray's own variable for the token; used when a compute names none.
DEFAULT_TOKEN_ENV = "RAY_AUTH_TOKEN"
#: Upload the data folder even to a cluster on this machine (tests of the upload path).
UPLOAD_DATA_ENV = "MODELBUILDER_RAY_UPLOAD_DATA"
#: Seconds a status read from the cluster is reused (monitors ask twice a second).
_STATUS_TTL_S = 1.0
#: Seconds a resource read may wait for the dashboard: a page shows it, so it must not hang.
RESOURCES_TIMEOUT_S = 3.0

_JOB_TO_WORKER = {
    JobState.PENDING: WorkerState.PENDING,
    JobState.RUNNING: WorkerState.RUNNING,
    JobState.SUCCEEDED: WorkerState.SUCCEEDED,
    JobState.FAILED: WorkerState.FAILED,
    JobState.STOPPED: WorkerState.STOPPED,
    JobState.UNKNOWN: WorkerState.LOST,
}


def cluster_of(spec: ComputeSpec) -> RayCluster:
    """The cluster of a ray compute (its token from the variable it names, else ``RAY_AUTH_TOKEN``)."""
    if not spec.address:
        raise ComputeError(f"Compute '{spec.name}' has no Ray address.", hint="Create it with --address.")
    token_ref = spec.token_ref or (DEFAULT_TOKEN_ENV if os.environ.get(DEFAULT_TOKEN_ENV) else None)
    return RayCluster(spec.address, token_ref)


class RayWorkerHandle(WorkerHandle):
    """A run's Ray job, plus the local follower that applies its events (when one runs here)."""

    def __init__(self, run_id: str, cluster: RayCluster, follower: LocalWorkerHandle | None) -> None:
        self.run_id = run_id
        self.cluster = cluster
        self.follower = follower
        self._cached: tuple[float, WorkerStatus] | None = None

    def describe(self) -> str:
        return f"Ray job {submission_id(self.run_id)} on {self.cluster.address}"

    def follower_alive(self) -> bool:
        return self.follower is not None and not self.follower.status().is_final

    def job_state(self) -> tuple[JobState, str]:
        return _job_state(self.cluster, self.run_id)

    def status(self) -> WorkerStatus:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < _STATUS_TTL_S:
            return self._cached[1]
        try:
            state, message = self.job_state()
        except ClusterUnreachableError:
            # A network blip is not the end of a run; heartbeats (or their absence) decide.
            status = WorkerStatus(WorkerState.RUNNING, f"{self.describe()} (cluster not reachable now)")
        else:
            worker_state = _JOB_TO_WORKER[state]
            if worker_state.is_final and self.follower_alive():
                # The job ended; the follower is still recording its outputs: not over yet.
                worker_state = WorkerState.RUNNING
            if state is JobState.UNKNOWN:
                forgotten = "(it restarted, or the job was deleted)"
                detail = f"the Ray cluster no longer knows {self.describe()} {forgotten}"
            else:
                detail = f"{self.describe()} is {state.value}" + (f": {message}" if message else "")
            status = WorkerStatus(worker_state, detail)
        self._cached = (now, status)
        return status

    def cancel(self) -> None:
        # A live follower sees CancelRequested at its next heartbeat and stops the job itself.
        if not self.follower_alive():
            with contextlib.suppress(RuntimeError, ClusterUnreachableError):
                stop(self.cluster.job_client(), self.run_id)

    def kill(self) -> None:
        with contextlib.suppress(RuntimeError, ClusterUnreachableError):
            stop(self.cluster.job_client(), self.run_id)
        if self.follower is not None:
            self.follower.kill()
        self._cached = None


def _job_state(cluster: RayCluster, run_id: str) -> tuple[JobState, str]:
    info = get_job(cluster.job_client(), run_id)
    return info.state, info.message


def start_follower(job: TrainingJob, spec: ComputeSpec, python: str | None = None) -> LocalWorkerHandle:
    """Start (or find running) the local follower of ``job``'s Ray job, in its own session."""
    folders = RunFolders.of_job(job)
    running = find_follower(folders.state_dir)
    if running is not None and not running.status().is_final:
        return running
    folders.state_dir.mkdir(parents=True, exist_ok=True)
    cluster = cluster_of(spec)
    follow_path = FollowSpec(job.to_dict(), cluster.address, spec.size.name, cluster.token_ref).save(
        folders.state_dir / FOLLOW_FILE
    )
    command = [python or sys.executable, "-m", FOLLOW_MODULE, str(follow_path)]
    try:
        with open(folders.state_dir / "ray-follow.out", "ab") as output:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
    except OSError as exc:
        raise ComputeError(
            f"The follower of run '{job.run_id}' could not be started: {exc}.",
            hint=f"Check that this command can run: {' '.join(command[:3])}",
        ) from exc
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        create_time = 0.0
    record = WorkerRecord(job.run_id, popen.pid, create_time=create_time, backend="ray")
    record.save(folders.state_dir / FOLLOWER_RECORD)
    return LocalWorkerHandle(record, popen)


def find_follower(state_dir: Path) -> LocalWorkerHandle | None:
    record = WorkerRecord.find(state_dir / FOLLOWER_RECORD)
    return None if record is None else LocalWorkerHandle(record)


class RayBackend(ComputeBackend):
    """Computes on a Ray cluster reached at its dashboard address."""

    name = "ray"
    max_nodes = None
    accepts_local_size = False
    uses_address = True

    def validate(self, spec: ComputeSpec) -> None:
        super().validate(spec)
        assert spec.address is not None
        # Only the compute's own (stored) reference counts: a RAY_AUTH_TOKEN that merely happens to be set
        # in this shell is not recorded with the compute, and the rule must not depend on the shell.
        check_address_security(spec.name, spec.address, spec.token_ref)

    def check(self, spec: ComputeSpec) -> Fit:
        reason = cluster_fit_reason(cluster_of(spec), spec.size)
        return Fit.ok() if reason is None else Fit.unfit(reason)

    def describe_resources(self, spec: ComputeSpec) -> ClusterResources:
        """The cluster's alive nodes (Ray's state API gives totals, not what is free now)."""
        try:
            cluster = replace(cluster_of(spec), timeout_s=RESOURCES_TIMEOUT_S)
            nodes = read_nodes(cluster)
        except ModelBuilderError as exc:  # unreachable, refused token, token variable not set
            return ClusterResources(unreachable=exc.message)
        return ClusterResources(
            nodes=tuple(
                NodeInfo(address=n.ip, cpus=n.cpus, gpus=n.gpus, memory_gib=n.memory_gib) for n in nodes
            )
        )

    def start(self, job: TrainingJob, spec: ComputeSpec) -> RayWorkerHandle:
        cluster = cluster_of(spec)
        folders = RunFolders.of_job(job)
        config = dict(job.config)
        upload = None
        if os.environ.get(UPLOAD_DATA_ENV) == "1" or not is_loopback(cluster.address):
            upload = Path(str(config["data"]))
            config["data"] = ""  # the entrypoint trains from its working directory
        checkpoint_dir = folders.checkpoint_dir(job.checkpoint_owner)
        ray_job = RayJobSpec(
            run_id=job.run_id,
            config=config,
            target=job.target,
            output_dir="",  # the job's own scratch folder: outputs come back through the dashboard
            checkpoint_dir=str(checkpoint_dir),
            **asdict(worker_plan(spec.size, spec.max_nodes)),
        )
        submit(cluster, ray_job, spec.size, upload_data=upload)
        follower = start_follower(job, spec)
        logger.info("Submitted Ray job %s for run %s", submission_id(job.run_id), job.run_id)
        return RayWorkerHandle(job.run_id, cluster, follower)

    def find(self, job: TrainingJob, spec: ComputeSpec) -> RayWorkerHandle | None:
        """The run's job; a follower is (re)started here when none lives while the cluster knows the job
        (the submitter's machine restarted, or its follower was killed): it resumes from its offset."""
        cluster = cluster_of(spec)
        state_dir = RunFolders.of_job(job).state_dir
        follower = find_follower(state_dir)
        if follower is not None and (is_done(state_dir) or not follower.status().is_final):
            return RayWorkerHandle(job.run_id, cluster, follower)
        try:
            state, _ = _job_state(cluster, job.run_id)
        except ClusterUnreachableError:
            return None if follower is None else RayWorkerHandle(job.run_id, cluster, follower)
        if state is JobState.UNKNOWN:
            return None if follower is None else RayWorkerHandle(job.run_id, cluster, follower)
        # The follower exits at once when the run has ended already; the run lock keeps it single.
        return RayWorkerHandle(job.run_id, cluster, start_follower(job, spec))
