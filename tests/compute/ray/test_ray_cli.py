"""The CLI on a ray compute: the submitter may go away (kill, --detach); run attach follows again; a killed
follower is restarted and resumes from its offset, applying every event exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner, Result

from factories import make_image_folder
from fake_trainer import OPTIONS_ENV, TARGET, TESTS_DIR, fake_config, use_fake_trainer  # noqa: F401
from modelbuilder import hints
from modelbuilder.cli import app
from modelbuilder.compute import events as ev
from modelbuilder.compute.job import WorkerRecord
from modelbuilder.compute.ray.cluster import RayCluster
from modelbuilder.compute.ray.follow import FOLLOWER_RECORD
from modelbuilder.compute.ray.jobs import FORWARD_ENV, JobState, get_job, job_logs, submission_id
from modelbuilder.entities import RunStatus
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.workspaces import WorkspaceSession
from ray_head import RayHead

pytestmark = pytest.mark.usefixtures("use_fake_trainer", "ray_fake_trainer")

DRIVER = (
    "import sys\n"
    f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
    "from modelbuilder.services import training_run\n"
    f"training_run.DEFAULT_TRAINING_TARGET = {TARGET!r}\n"
    "from modelbuilder.cli import main\n"
    "main()\n"
)


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)


@pytest.fixture
def cpu_ray(ray_head: RayHead, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(FORWARD_ENV, OPTIONS_ENV)  # the fake trainer's options reach the job
    result = cli("compute", "create", "cpu-r", "--size", "Standard_F2s_v2", "--backend", "ray",
                   "--address", ray_head.address)  # fmt: skip
    assert result.exit_code == 0, result.output
    return "cpu-r"


def _wait_status(run_id: str, wanted: set[RunStatus], timeout: float = 120) -> RunStatus:
    deadline = time.monotonic() + timeout
    with open_workspace() as session:
        while time.monotonic() < deadline:
            status = session.store.get_run(run_id).status
            if status in wanted:
                return status
            time.sleep(0.2)
    raise AssertionError(f"run {run_id} is {status}, not {wanted}, after {timeout} s")


def _wait_for_trials(timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    with open_workspace() as session:
        while time.monotonic() < deadline:
            for run in session.store.list_runs(parent_run_id=None):
                if session.store.list_child_runs(run.id):
                    return run.id
            time.sleep(0.1)
    raise AssertionError("training did not start")


def test_killed_cli_leaves_the_run_going_and_attach_shows_it(
    cpu_ray: str, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"trials": 2, "epochs": 10, "epoch_seconds": 0.3}))
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "train", str(data), "--compute", cpu_ray, "--no-portal"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    run_id = _wait_for_trials()
    process.kill()  # the submitter goes away without a word
    process.communicate(timeout=30)
    assert _wait_status(run_id, {RunStatus.COMPLETED, RunStatus.FAILED}) is RunStatus.COMPLETED
    result = cli("run", "attach", run_id, "--no-portal")
    assert result.exit_code == 0, result.output
    assert f"Run {run_id}: Completed" in result.stdout
    assert "Best validation accuracy" in result.stdout


def test_detach_returns_at_once_and_attach_follows_to_the_end(
    cpu_ray: str, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"trials": 2, "epochs": 4, "epoch_seconds": 0.2}))
    started = time.monotonic()
    detached = cli("train", str(data), "--compute", cpu_ray, "--no-portal", "--detach")
    assert detached.exit_code == 0, detached.output
    assert time.monotonic() - started < 30
    with open_workspace() as session:
        (run,) = session.store.list_runs(parent_run_id=None)
    assert not run.status.is_terminal
    assert hints.command("run", "attach", hints.short_id(run.id)) in detached.stderr
    attached = cli("run", "attach", run.id, "--no-portal")
    assert attached.exit_code == 0, attached.output
    assert f"Run {run.id}: Completed" in attached.stdout


def test_a_killed_follower_is_restarted_and_applies_each_event_once(
    session_ray: tuple[WorkspaceSession, str], data: Path, ray_head: RayHead
) -> None:
    session, compute = session_ray
    config = fake_config(data, trials=2, epochs=12, epoch_seconds=0.25)
    submission = submit_training(session, config, compute=compute)
    run_id = submission.run.id
    _wait_for_trials()
    time.sleep(1.0)
    record = WorkerRecord.find(session.folder / "workers" / run_id / FOLLOWER_RECORD)
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)  # the submitting machine's side dies mid-run
    time.sleep(2.0)
    worker = runs.find_worker(session, session.store.get_run(run_id))  # reconciles: a new follower
    assert worker is not None
    *_, last = runs.follow_run(session, run_id, worker, timeout=120)
    assert last.run.status is RunStatus.COMPLETED
    log = job_logs(RayCluster(ray_head.address).job_client(), run_id)
    events = [e for e in map(ev.decode, log.split("\n")) if e is not None]
    for child in session.store.list_child_runs(run_id):
        expected = Counter(e.key for e in events if isinstance(e, ev.Metric) and e.trial == child.name)
        for ended in (e for e in events if isinstance(e, ev.TrialEnded) and e.trial == child.name):
            expected.update(ended.metrics.keys())
        stored = {key: len(rows) for key, rows in session.store.get_metric_histories(child.id).items()}
        assert stored == dict(expected), child.name


@pytest.fixture
def session_ray(cpu_ray: str) -> Iterator[tuple[WorkspaceSession, str]]:
    opened = open_workspace()
    yield opened, cpu_ray
    opened.close()


def test_a_job_the_cluster_forgot_fails_the_run_with_that_reason(
    session_ray: tuple[WorkspaceSession, str], data: Path, ray_head: RayHead
) -> None:
    session, compute = session_ray
    submission = submit_training(
        session, fake_config(data, trials=2, epochs=200, epoch_seconds=0.05), compute=compute
    )
    run_id = submission.run.id
    _wait_for_trials()
    record = WorkerRecord.find(session.folder / "workers" / run_id / FOLLOWER_RECORD)
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)
    client = RayCluster(ray_head.address).job_client()
    client.stop_job(submission_id(run_id))
    deadline = time.monotonic() + 60
    while not client.get_job_status(submission_id(run_id)).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.delete_job(submission_id(run_id))  # as after a cluster restart: the job is gone
    while get_job(client, run_id).state is not JobState.UNKNOWN:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Any view of the run reconciles it (the reaper, or a follower restarted meanwhile) within seconds.
    while not session.store.get_run(run_id).status.is_terminal:
        assert time.monotonic() < deadline
        runs.reap_lost_runs(session)
        time.sleep(0.5)
    assert session.store.get_run(run_id).status is RunStatus.FAILED
    error = session.store.get_run(run_id).error
    assert error is not None
    assert f"the Ray cluster no longer knows Ray job {submission_id(run_id)}" in error.message


def _kill_follower(session: WorkspaceSession, run_id: str) -> int:
    record = WorkerRecord.find(session.folder / "workers" / run_id / FOLLOWER_RECORD)
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while psutil.pid_exists(record.pid) and psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return record.pid


def test_the_reaper_asks_the_backend_before_it_marks_a_silent_ray_run_lost(
    session_ray: tuple[WorkspaceSession, str], data: Path, ray_head: RayHead
) -> None:
    session, compute = session_ray
    submission = submit_training(
        session, fake_config(data, trials=2, epochs=400, epoch_seconds=0.05), compute=compute
    )
    run_id = submission.run.id
    deadline = time.monotonic() + 90
    while not session.store.list_child_runs(run_id):  # this run trains (not an earlier test's)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # The submitting machine "rebooted": its follower is gone and the run's heartbeat goes stale.
    old = _kill_follower(session, run_id)
    time.sleep(1.5)
    assert run_id in [r.id for r in session.store.find_stale_runs(1.0)]
    # The job still runs on the cluster: not lost; the backend started a new follower instead.
    reaped = runs.reap_stale_runs(session.store, 1.0, session=session, artifacts=session.artifacts)
    assert run_id not in [r.id for r in reaped]
    assert not session.store.get_run(run_id).status.is_terminal
    # Its trials live with it (their heartbeats went stale too, but their worker is the run's).
    assert not [c for c in session.store.list_child_runs(run_id) if c.status is RunStatus.FAILED]
    record = WorkerRecord.find(session.folder / "workers" / run_id / FOLLOWER_RECORD)
    deadline = time.monotonic() + 30
    while record is None or record.pid == old:
        assert time.monotonic() < deadline
        time.sleep(0.2)
        record = WorkerRecord.find(session.folder / "workers" / run_id / FOLLOWER_RECORD)
    # Now the job goes too (a cluster restart), with the new follower: lost, with the backend's reason.
    _kill_follower(session, run_id)
    client = RayCluster(ray_head.address).job_client()
    client.stop_job(submission_id(run_id))
    deadline = time.monotonic() + 60
    while not client.get_job_status(submission_id(run_id)).is_terminal():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert client.delete_job(submission_id(run_id))
    while get_job(client, run_id).state is not JobState.UNKNOWN:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.5)
    # The reaper fails it, or (when Ray still reports the deleted job as ended) the follower it restarts.
    while not session.store.get_run(run_id).status.is_terminal:
        assert time.monotonic() < deadline
        runs.reap_stale_runs(session.store, 1.0, session=session, artifacts=session.artifacts)
        time.sleep(0.5)
    lost = session.store.get_run(run_id)
    assert lost.status is RunStatus.FAILED and lost.error is not None
    assert lost.error.message.startswith("process lost: ")
    assert f"Ray job {submission_id(run_id)}" in lost.error.message
