"""The ray backend through the services: errored computes, and a run whose every event is applied once
(cancel, failures and kill are in the backend contract suite, tests/contracts/test_compute_backend.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.compute import ComputeSpec
from modelbuilder.compute import events as ev
from modelbuilder.compute.ray.cluster import RayCluster
from modelbuilder.compute.ray.jobs import JobState, get_job, job_logs, submission_id, submit
from modelbuilder.compute.ray.jobspec import RayJobSpec
from modelbuilder.compute.sizes import get_size
from modelbuilder.entities import ProvisioningState, RunStatus
from modelbuilder.errors import ComputeExistsError, InvalidParameterError
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.computes import create_compute
from modelbuilder.services.training_run import Submission
from modelbuilder.services.workspaces import WorkspaceSession
from ray_head import RayHead, free_ports


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    opened = open_workspace()
    yield opened
    opened.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)


@pytest.fixture
def ray_compute(session: WorkspaceSession, ray_head: RayHead) -> str:
    compute = create_compute(session, ComputeSpec.create("cpu-r", "Standard_F2s_v2", backend="ray",
                                                         address=ray_head.address))  # fmt: skip
    assert compute.state is ProvisioningState.SUCCEEDED, compute.error
    return compute.name


def _wait(session: WorkspaceSession, submission: Submission, timeout: float = 120) -> RunStatus:
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=timeout)
    return last.run.status


def test_unsatisfiable_size_leaves_a_failed_compute_and_the_name_taken(
    session: WorkspaceSession, ray_head: RayHead
) -> None:
    spec = ComputeSpec.create("gpu-a", "Standard_NC12", backend="ray", address=ray_head.address)
    failed = create_compute(session, spec)
    assert failed.state is ProvisioningState.FAILED
    assert (
        failed.error
        == f"Standard_NC12 needs 2 GPUs on one node; the largest node of {ray_head.address} has 0"
    )
    with pytest.raises(ComputeExistsError, match="Failed"):
        create_compute(session, spec)


def test_unreachable_cluster_leaves_a_failed_compute(session: WorkspaceSession) -> None:
    (port,) = free_ports(1)
    address = f"http://127.0.0.1:{port}"
    failed = create_compute(
        session, ComputeSpec.create("gone", "Standard_F2s_v2", backend="ray", address=address)
    )
    assert failed.state is ProvisioningState.FAILED
    assert failed.error is not None and f"The Ray cluster at {address} is not reachable" in failed.error


def test_network_address_without_token_is_refused_before_anything_is_created(
    session: WorkspaceSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    with pytest.raises(InvalidParameterError, match="without a token"):
        ComputeSpec.create("far", "Standard_F2s_v2", backend="ray", address="http://10.1.2.3:8265")
    assert session.store.find_compute("far") is None


@pytest.mark.usefixtures("use_fake_trainer")
def test_a_run_trains_as_a_ray_job_and_completes_with_verified_outputs(
    session: WorkspaceSession, ray_head: RayHead, ray_compute: str, ray_fake_trainer: str, data: Path
) -> None:
    submission = submit_training(session, fake_config(data, trials=2, epochs=3), compute=ray_compute)
    assert _wait(session, submission) is RunStatus.COMPLETED
    run_id = submission.run.id
    store = session.store
    job = get_job(RayCluster(ray_head.address).job_client(), run_id)
    assert job.state is JobState.SUCCEEDED
    children = store.list_child_runs(run_id)
    assert len(children) == 2 and all(c.status is RunStatus.COMPLETED for c in children)
    # Each metric event of the job's log is one row: nothing applied twice (trial_ended re-logs its
    # final metrics at the last step, as on the local backend).
    client = RayCluster(ray_head.address).job_client()
    events = [e for e in map(ev.decode, job_logs(client, run_id).split("\n")) if e is not None]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # every line arrived, once
    assert events[0].kind == "started" and events[-1].kind == "result"
    # Submitting the run's job again finds it instead of starting a second one.
    spec = RayJobSpec(run_id=run_id, config={}, target="none:none")
    assert submit(RayCluster(ray_head.address), spec, get_size("Standard_F2s_v2")) == submission_id(run_id)
    assert [j.submission_id for j in client.list_jobs()].count(submission_id(run_id)) == 1
    for child in children:
        trial = child.name
        expected = Counter(e.key for e in events if isinstance(e, ev.Metric) and e.trial == trial)
        for ended in (e for e in events if isinstance(e, ev.TrialEnded) and e.trial == trial):
            expected.update(ended.metrics.keys())
        stored = {key: len(rows) for key, rows in store.get_metric_histories(child.id).items()}
        assert stored == dict(expected), trial
    names = {a.path for a in store.list_artifacts(run_id)}
    assert {"bestModel.onnx", "MLModel.zip", "bestModelMap.json"} <= names
    assert session.artifacts.find_mismatches(run_id, store.list_artifacts(run_id)) == []
    lines = [line.text for line in store.get_log_lines(run_id, limit=None)]
    assert any(f"Ray job {submission_id(run_id)} started" in line for line in lines)
    assert not any(line.startswith("@mb-event") for line in lines)
