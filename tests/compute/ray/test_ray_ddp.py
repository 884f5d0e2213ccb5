"""Sizes become training workers: a GPU size one worker per GPU, a CPU size its compute's node count; a
2-worker CPU run (gloo, Ray Train) trains a real tiny model end to end as well as one worker does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from factories import make_image_folder
from modelbuilder.compute import ComputeSpec
from modelbuilder.compute.events import Error, decode
from modelbuilder.compute.job import DEFAULT_TRAINING_TARGET
from modelbuilder.compute.ray.cluster import RayCluster
from modelbuilder.compute.ray.jobs import FORWARD_ENV, get_job, job_logs, submit
from modelbuilder.compute.ray.jobspec import RayJobSpec, WorkerPlan, worker_plan
from modelbuilder.compute.ray.train_workers import MAX_FAILURES_ENV, worker_failure_cause
from modelbuilder.compute.sizes import get_size
from modelbuilder.entities import ProvisioningState, Run, RunStatus
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.computes import create_compute
from modelbuilder.services.runs import RunUpdate
from modelbuilder.services.workspaces import WorkspaceSession
from modelbuilder.training.config import TrainingConfig
from modelbuilder.training.reporter import RecordingReporter
from ray_head import RayHead

#: Only gradient-trained trials, so the accuracy compared is the data-parallel training's own.
GRADIENT_TRIALS = ("partial_finetune",)


def test_gpu_sizes_take_one_worker_per_gpu_and_cpu_sizes_their_node_count() -> None:
    assert worker_plan(get_size("Standard_NC12")) == WorkerPlan(2, True, 6.0)
    assert worker_plan(get_size("Standard_NC24")) == WorkerPlan(4, True, 6.0)
    assert worker_plan(get_size("Standard_NC4as_T4_v3")) == WorkerPlan(1, True, 4.0)
    assert worker_plan(get_size("Standard_F2s_v2")) == WorkerPlan(1, False, 2.0)
    assert worker_plan(get_size("Standard_F2s_v2"), nodes=2) == WorkerPlan(2, False, 1.0)
    assert worker_plan(get_size("Standard_F2s_v2"), nodes=8) == WorkerPlan(2, False, 1.0)  # one per vCPU


def test_a_data_parallel_entrypoint_leaves_the_size_to_its_workers() -> None:
    size = get_size("Standard_NC12")
    single = RayJobSpec("r1", {}, "m:f")
    group = RayJobSpec("r1", {}, "m:f", workers=2, use_gpu=True, cpus_per_worker=6.0)
    assert single.entrypoint_resources(size) == (12.0, 2.0)
    assert group.entrypoint_resources(size) == (0.0, 0.0)
    assert RayJobSpec.from_argument(group.to_argument()).worker_plan == WorkerPlan(2, True, 6.0)


def test_the_cause_of_a_failed_worker_group_is_the_first_failed_ranks_error_in_one_line() -> None:
    from ray.train import WorkerGroupError as RayWorkerGroupError

    oom = RuntimeError("CUDA out of memory.\nTraceback (most recent call last):")
    errors = {3: ValueError("late"), 1: oom}
    failed = RayWorkerGroupError("rank 1 failed:\nTraceback ...", errors)
    assert worker_failure_cause(failed) == "rank 1: RuntimeError: CUDA out of memory."
    assert worker_failure_cause(OSError("Training failed:\nno space left")) == "OSError: no space left"
    assert len(worker_failure_cause(RuntimeError("x" * 5000))) == 400


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    opened = open_workspace()
    yield opened
    opened.close()


@pytest.mark.slow
def test_two_cpu_workers_train_a_real_model_as_well_as_one(
    session: WorkspaceSession, ray_head: RayHead, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from modelbuilder.training.trainer import run_training

    data = make_image_folder(tmp_path / "shapes", classes=3, per_class=12, size=32)
    config = TrainingConfig(data=str(data), time_budget=15, architecture="test_tiny",
                            strategies=GRADIENT_TRIALS)
    one = run_training(config, RecordingReporter(), tmp_path / "one-worker")

    spec = ComputeSpec.create("cpu-ddp", "Standard_F2s_v2", backend="ray", address=ray_head.address,
                              max_nodes=2)
    assert create_compute(session, spec).state is ProvisioningState.SUCCEEDED
    submission = submit_training(session, config, compute="cpu-ddp")
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=240)
    run = session.store.get_run(submission.run.id)
    assert last.run.status is RunStatus.COMPLETED, run.error

    metrics = run.latest_metrics
    assert metrics["world_size"] == 2
    assert metrics["steps_rank_0"] > 0
    assert metrics["steps_rank_0"] == metrics["steps_rank_1"]  # both workers took every step
    trials = session.store.list_child_runs(run.id)
    assert [t.params["world_size"] for t in trials] == [2]
    # 3 classes, 7 validation images: one image is 0.14; a 2-worker run sees the same data and seed.
    assert metrics["accuracy"] >= one.accuracy - 0.3
    assert metrics["accuracy"] > 1 / 3 + 0.1
    names = {a.path for a in session.store.list_artifacts(run.id)}
    assert {"bestModel.onnx", "MLModel.zip", "result.json"} <= names


@pytest.mark.slow
def test_canceling_a_two_worker_run_stops_every_worker_and_keeps_the_best_model(
    session: WorkspaceSession, ray_head: RayHead, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    data = make_image_folder(tmp_path / "shapes", classes=3, per_class=12, size=32)
    # The linear head finishes first; the long data-parallel fine-tune is canceled while it trains.
    config = TrainingConfig(data=str(data), time_budget=300, architecture="test_tiny",
                            strategies=("linear", *GRADIENT_TRIALS))
    spec = ComputeSpec.create("cpu-ddp-cancel", "Standard_F2s_v2", backend="ray",
                              address=ray_head.address, max_nodes=2)
    assert create_compute(session, spec).state is ProvisioningState.SUCCEEDED
    submission = submit_training(session, config, compute="cpu-ddp-cancel")
    deadline = time.monotonic() + 120
    while len(session.store.list_child_runs(submission.run.id)) < 2:  # the fine-tune started
        assert time.monotonic() < deadline, "the data-parallel trial never started"
        assert not session.store.get_run(submission.run.id).status.is_terminal
        time.sleep(0.5)
    time.sleep(2)
    runs.cancel_run(session, submission.run.id)
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=120)
    run = session.store.get_run(submission.run.id)
    assert last.run.status is RunStatus.CANCELED, run.error
    assert run.latest_metrics["steps_rank_0"] == run.latest_metrics["steps_rank_1"] > 0
    assert "bestModel.onnx" in {a.path for a in session.store.list_artifacts(run.id)}


def _train_workers(head: RayHead) -> list[psutil.Process]:
    found = []
    for pid in head.session_pids():
        try:
            process = psutil.Process(pid)
            if "RayTrainWorker" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _kill_a_worker_during_the_first_trial(session: WorkspaceSession, ray_head: RayHead, tmp_path: Path,
                                          compute: str) -> tuple[Run, RunUpdate]:
    """A 2-worker CPU run on a new compute; one training worker is killed as the first trial (linear,
    on rank 0 while the other rank waits for its decision) runs; the run followed to its end."""
    pytest.importorskip("torch")
    data = make_image_folder(tmp_path / "shapes", classes=3, per_class=12, size=32)
    config = TrainingConfig(data=str(data), time_budget=40, architecture="test_tiny",
                            strategies=("linear", *GRADIENT_TRIALS))
    spec = ComputeSpec.create(compute, "Standard_F2s_v2", backend="ray", address=ray_head.address,
                              max_nodes=2)
    assert create_compute(session, spec).state is ProvisioningState.SUCCEEDED
    submission = submit_training(session, config, compute=compute)
    deadline = time.monotonic() + 120
    while not session.store.list_child_runs(submission.run.id):
        assert time.monotonic() < deadline, "no trial ever started"
        time.sleep(0.2)
    workers = _train_workers(ray_head)
    assert len(workers) == 2
    workers[-1].kill()
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=180)
    return session.store.get_run(submission.run.id), last


@pytest.mark.slow
def test_a_killed_worker_restarts_the_group_which_resumes_and_completes(
    session: WorkspaceSession, ray_head: RayHead, tmp_path: Path
) -> None:
    run, last = _kill_a_worker_during_the_first_trial(session, ray_head, tmp_path, "cpu-ddp-kill")
    assert last.run.status is RunStatus.COMPLETED, run.error
    assert run.latest_metrics["worker_group_restarts"] == 1
    lines, _ = runs.log_lines(session, run.id, limit=None)
    log = "\n".join(line.text for line in lines)
    assert "the worker group restarted after a worker failed (attempt 2 of 3)" in log
    assert run.latest_metrics["steps_rank_0"] == run.latest_metrics["steps_rank_1"] > 0


@pytest.mark.slow
def test_a_worker_failing_beyond_the_restart_limit_fails_the_run_with_the_cause(
    session: WorkspaceSession, ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_FAILURES_ENV, "0")  # no restart: the first killed worker is beyond the limit
    monkeypatch.setenv(FORWARD_ENV, MAX_FAILURES_ENV)
    run, last = _kill_a_worker_during_the_first_trial(session, ray_head, tmp_path, "cpu-ddp-fail")
    assert last.run.status is RunStatus.FAILED
    assert run.error is not None and run.error.type == "WorkerGroupError", run.error
    message = run.error.message
    assert message.startswith("The 2 training workers failed after 0 restart(s) of the worker group "
                              "(at most 0 allowed): rank "), message
    assert "Traceback" not in message and "\n" not in message and len(message) < 600
    assert run.error.hint and MAX_FAILURES_ENV in run.error.hint
    assert all(child.status.is_terminal for child in session.store.list_child_runs(run.id))
    lines, _ = runs.log_lines(session, run.id, limit=None)
    assert any("the worker group failed" in line.text for line in lines)  # the details are in the log


@pytest.mark.slow
def test_workers_that_can_never_be_placed_fail_the_job_with_the_reason(
    ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    # Provisioning refuses such a size on this head; submitted anyway, the job must not wait forever.
    monkeypatch.setenv("MODELBUILDER_RAY_PLACEMENT_TIMEOUT_S", "3")
    monkeypatch.setenv(FORWARD_ENV, "MODELBUILDER_RAY_PLACEMENT_TIMEOUT_S")
    data = make_image_folder(tmp_path / "shapes", classes=2, per_class=3, size=8)
    config = TrainingConfig(data=str(data), time_budget=10, architecture="test_tiny")
    spec = RayJobSpec("unplaceable", config.to_dict(), DEFAULT_TRAINING_TARGET, str(tmp_path / "out"),
                      workers=2, cpus_per_worker=2.0)  # 4 CPUs on one node; the head has 2
    cluster = RayCluster(ray_head.address)
    submit(cluster, spec, get_size("Standard_F4s_v2"))
    client = cluster.job_client()
    deadline = time.monotonic() + 90
    while not get_job(client, spec.run_id).state.is_final:
        assert time.monotonic() < deadline, "the job still waits for its workers"
        time.sleep(1)
    events = [decode(line) for line in job_logs(client, spec.run_id).splitlines()]
    errors = [e for e in events if isinstance(e, Error)]
    assert errors and "could not be placed" in errors[-1].message, events
