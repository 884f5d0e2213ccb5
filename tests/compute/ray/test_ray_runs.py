"""Ray runs beyond the backend contract (tests/contracts/test_compute_backend.py): data uploaded once, a job
that can never be scheduled fails fast with the reason, and one real (tiny backbone) training end to end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.compute import ComputeSpec
from modelbuilder.compute.backend import Fit
from modelbuilder.compute.provisioning import provision_compute
from modelbuilder.compute.ray.backend import UPLOAD_DATA_ENV, RayBackend
from modelbuilder.compute.ray.cluster import RayCluster
from modelbuilder.compute.ray.jobs import submission_id
from modelbuilder.entities import ProvisioningState, RunStatus
from modelbuilder.services import open_workspace, runs, submit_training
from modelbuilder.services.computes import create_compute
from modelbuilder.services.training_run import Submission
from modelbuilder.services.workspaces import WorkspaceSession
from modelbuilder.training.config import TrainingConfig
from ray_head import RayHead


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    opened = open_workspace()
    yield opened
    opened.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)


def _cpu_compute(session: WorkspaceSession, head: RayHead, name: str = "cpu-r") -> str:
    spec = ComputeSpec.create(name, "Standard_F2s_v2", backend="ray", address=head.address)
    assert create_compute(session, spec).state is ProvisioningState.SUCCEEDED
    return name


def _wait(session: WorkspaceSession, submission: Submission, timeout: float = 120) -> RunStatus:
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=timeout)
    return last.run.status


@pytest.mark.usefixtures("use_fake_trainer", "ray_fake_trainer")
def test_uploaded_data_is_content_addressed_and_sent_once(
    session: WorkspaceSession, ray_head: RayHead, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UPLOAD_DATA_ENV, "1")  # as for a cluster that cannot read this machine's paths
    compute = _cpu_compute(session, ray_head)
    first = submit_training(session, fake_config(data, trials=1, epochs=1), compute=compute)
    second = submit_training(session, fake_config(data, trials=1, epochs=1), compute=compute)
    assert _wait(session, first) is RunStatus.COMPLETED
    assert _wait(session, second) is RunStatus.COMPLETED
    client = RayCluster(ray_head.address).job_client()
    uris = [client.get_job_info(submission_id(s.run.id)).runtime_env["working_dir"] for s in (first, second)]
    assert uris[0] == uris[1] and uris[0].startswith("gcs://_ray_pkg_")  # one package, named by content
    lines = [line.text for line in session.store.get_log_lines(first.run.id, limit=None)]
    assert any("reading " in line and str(data) not in line for line in lines)  # trained from the upload


class _OptimisticRay(RayBackend):
    """Accepts any size at provisioning, as if the cluster had shrunk since."""

    def check(self, spec: ComputeSpec) -> Fit:
        return Fit.ok()


@pytest.mark.usefixtures("use_fake_trainer", "ray_fake_trainer")
def test_a_job_that_can_never_be_scheduled_fails_fast_with_the_reason(
    session: WorkspaceSession, ray_head: RayHead, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELBUILDER_RAY_PENDING_S", "3")  # the default is 30 s
    spec = ComputeSpec.create("big", "Standard_F4s_v2", backend="ray", address=ray_head.address)
    assert (
        provision_compute(session.store, spec, backend=_OptimisticRay()).state is ProvisioningState.SUCCEEDED
    )
    started = time.monotonic()
    submission = submit_training(session, fake_config(data, trials=1), compute="big")
    assert _wait(session, submission) is RunStatus.FAILED
    assert time.monotonic() - started < 30
    error = session.store.get_run(submission.run.id).error
    assert error is not None
    largest = f"the largest node of {ray_head.address} has 2"
    assert error.message == (
        f"Ray job {submission_id(submission.run.id)} can never be scheduled: Standard_F4s_v2 needs 4 vCPUs "
        f"on one node; {largest}."
    )


@pytest.mark.slow
def test_a_real_tiny_model_trains_on_ray_end_to_end(
    session: WorkspaceSession, ray_head: RayHead, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    data = make_image_folder(tmp_path / "shapes", classes=3, per_class=12, size=32)
    compute = _cpu_compute(session, ray_head)
    config = TrainingConfig(data=str(data), time_budget=8, architecture="test_tiny")
    submission = submit_training(session, config, compute=compute)
    assert _wait(session, submission, timeout=300) is RunStatus.COMPLETED
    run = session.store.get_run(submission.run.id)
    assert run.latest_metrics["accuracy"] >= 0.5
    names = {a.path for a in session.store.list_artifacts(run.id)}
    assert {"bestModel.onnx", "bestModelMap.json", "MLModel.zip", "result.json", "logs/run.log"} <= names
    assert session.artifacts.find_mismatches(run.id, session.store.list_artifacts(run.id)) == []
    out = runs.download_outputs(session, run.id, tmp_path / "out")
    assert "MLModel.zip" in out
