"""Ray jobs of runs: idempotent submission, events in the log, outputs with their sha256, state mapping."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from factories import make_image_folder
from modelbuilder.compute.ray.cluster import RayCluster
from modelbuilder.compute.ray.events import digest, split_log
from modelbuilder.compute.ray.jobs import (
    UPLOAD_LIMIT_BYTES,
    JobState,
    check_upload_size,
    get_job,
    job_logs,
    submission_id,
    submit,
)
from modelbuilder.compute.ray.jobspec import RayJobSpec
from modelbuilder.compute.sizes import get_size
from modelbuilder.errors import ComputeError
from modelbuilder.training.config import TrainingConfig
from ray_head import RayHead


def _wait_final(client: object, run_id: str, timeout: float = 90) -> JobState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = get_job(client, run_id).state
        if state.is_final:
            return state
        time.sleep(0.3)
    raise AssertionError(f"job of {run_id} still {state} after {timeout} s")


def test_fake_training_job_prints_events_and_outputs_with_digests(
    ray_head: RayHead, ray_fake_trainer: str, tmp_path: Path
) -> None:
    data = make_image_folder(tmp_path / "data", classes=2, per_class=3)
    config = TrainingConfig(data=str(data), time_budget=10, extra={"fake": {"trials": 2, "epochs": 2}})
    run_id = uuid.uuid4().hex[:12]
    spec = RayJobSpec(run_id=run_id, config=config.to_dict(), target=ray_fake_trainer,
                      output_dir=str(tmp_path / "out"))  # fmt: skip
    cluster = RayCluster(ray_head.address)
    client = cluster.job_client()
    size = get_size("Standard_F2s_v2")
    assert submit(cluster, spec, size, client=client) == submission_id(run_id) == f"mb-{run_id}"
    assert submit(cluster, spec, size, client=client) == f"mb-{run_id}"  # the same job, not a second one
    assert _wait_final(client, run_id) is JobState.SUCCEEDED
    events = [event for event, _ in split_log(job_logs(client, run_id)) if event is not None]
    kinds = [event.kind for event in events]
    assert kinds[0] == "started" and kinds[-1] == "result"
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    metrics = [e.data for e in events if e.kind == "metric" and e.data["trial"] is not None]
    assert len(metrics) >= 4  # 2 trials x 2 epochs
    result = events[-1].data
    assert result["sha256"]
    for name, sha in result["sha256"].items():
        assert digest(Path(result["files"][name])) == sha
    assert [j.submission_id for j in client.list_jobs()].count(f"mb-{run_id}") == 1


def test_job_of_unknown_run_is_unknown(ray_head: RayHead) -> None:
    client = RayCluster(ray_head.address).job_client()
    info = get_job(client, "never-submitted")
    assert info.state is JobState.UNKNOWN


def test_upload_over_the_limit_is_refused_before_uploading(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "blob.bin", "wb") as handle:
        handle.truncate(UPLOAD_LIMIT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ComputeError, match=r"Ray uploads at most 100 MiB") as caught:
        check_upload_size(big, "The training data folder")
    assert "filesystem the cluster nodes can read" in (caught.value.hint or "")
