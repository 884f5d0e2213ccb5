"""Submitting training runs: experiments, params, fingerprints, computes, failures, cancel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fake_trainer import fake_config
from modelbuilder.compute import ComputeSpec, LocalBackend
from modelbuilder.compute.provisioning import MachineCapacity, provision_compute
from modelbuilder.entities import ProvisioningState, RunError, RunStatus
from modelbuilder.errors import (
    ComputeError,
    ComputeNotFoundError,
    DatasetError,
    InvalidNameError,
    InvalidStateError,
)
from modelbuilder.services import runs, submit_training
from modelbuilder.services.computes import delete_compute, require_usable_compute
from modelbuilder.services.training_run import Submission, config_of_run, dataset_fingerprint
from modelbuilder.services.workspaces import WorkspaceSession
from modelbuilder.store import lifecycle

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


def _wait(session: WorkspaceSession, submission: Submission, timeout: float = 60) -> RunStatus:
    *_, last = runs.follow_run(session, submission.run.id, submission.worker, timeout=timeout)
    return last.run.status


def test_runs_with_the_same_experiment_name_share_one_experiment(
    session: WorkspaceSession, data: Path
) -> None:
    first = submit_training(session, fake_config(data, trials=1), experiment="flowers-exp")
    second = submit_training(session, fake_config(data, trials=1), experiment="flowers-exp")
    third = submit_training(session, fake_config(data, trials=1), experiment="other-exp")
    for submission in (first, second, third):
        assert _wait(session, submission) is RunStatus.COMPLETED
    summaries = {s.experiment.name: s.run_count for s in session.store.list_experiments()}
    assert summaries == {"flowers-exp": 2, "other-exp": 1}
    assert first.run.experiment_id == second.run.experiment_id != third.run.experiment_id


def test_a_run_records_params_fingerprint_and_compute(session: WorkspaceSession, data: Path) -> None:
    submission = submit_training(session, fake_config(data, trials=1))
    run = submission.run
    assert run.status is RunStatus.QUEUED
    assert run.experiment == "flowers"  # default: the data folder's name
    assert run.compute == "local"
    assert run.params["data"] == str(data.resolve()) and run.params["time_budget"] == 10
    assert config_of_run(run) == fake_config(data.resolve(), trials=1)
    assert run.dataset_fingerprint == dataset_fingerprint(data)
    assert _wait(session, submission) is RunStatus.COMPLETED
    folders = session.run_folders(run.id)
    assert folders.job_path.is_file() and folders.worker_path.is_file()


def test_dataset_fingerprint_follows_the_files(tmp_path: Path, data: Path) -> None:
    before = dataset_fingerprint(data)
    (data / ".DS_Store").write_bytes(b"ignored")
    assert dataset_fingerprint(data) == before
    (data / "label0" / "extra.png").write_bytes(b"new image")
    assert dataset_fingerprint(data) != before
    table = tmp_path / "table.csv"
    table.write_text("ImagePath,Label\na.png,x\n")
    assert len(dataset_fingerprint(table)) == 64
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_fingerprint(tmp_path / "missing")


def test_missing_data_and_bad_names_fail_before_a_run_exists(
    session: WorkspaceSession, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match="does not exist") as info:
        submit_training(session, fake_config(tmp_path / "missing"))
    assert info.value.hint
    with pytest.raises(InvalidNameError):
        submit_training(session, fake_config(tmp_path), experiment="x")
    assert session.store.count_runs() == 0


def test_a_failed_compute_cannot_run_training(session: WorkspaceSession, data: Path) -> None:
    tiny = LocalBackend(capacity=MachineCapacity(cores=2, memory_gib=4, gpus=0))
    failed = provision_compute(session.store, ComputeSpec.create("gpu-1", "Standard_NC12"), backend=tiny)
    assert failed.state is ProvisioningState.FAILED
    with pytest.raises(ComputeError, match=r"'gpu-1' is in state Failed \(needs 2 GPUs") as info:
        submit_training(session, fake_config(data), compute="gpu-1")
    hint = info.value.hint or ""
    assert "--compute local" in hint and "modelbuilder compute delete gpu-1" in hint
    with pytest.raises(ComputeNotFoundError, match="'nowhere' not found") as missing:
        require_usable_compute(session, "nowhere")
    assert "modelbuilder compute create nowhere" in (missing.value.hint or "")
    assert session.store.count_runs() == 0
    delete_compute(session, "gpu-1")
    fitting = provision_compute(session.store, ComputeSpec.create("gpu-1", "Standard_F2s_v2"), backend=tiny)
    assert fitting.state is ProvisioningState.SUCCEEDED
    assert _wait(session, submit_training(session, fake_config(data, trials=1), compute="gpu-1")) is (
        RunStatus.COMPLETED
    )


def test_errors_in_the_worker_fail_the_run_with_message_and_hint(
    session: WorkspaceSession, data: Path
) -> None:
    submission = submit_training(session, fake_config(data, trials=2, fail="dataset"))
    assert _wait(session, submission) is RunStatus.FAILED
    run = session.store.get_run(submission.run.id)
    assert run.error == RunError(
        "DatasetError", "Label 'label0' has only 1 image; at least 2 are needed.", "Add images."
    )


def test_a_worker_that_exits_without_a_word_is_process_lost(session: WorkspaceSession, data: Path) -> None:
    submission = submit_training(session, fake_config(data, trials=2, fail="exit"))
    assert _wait(session, submission) is RunStatus.FAILED
    run = session.store.get_run(submission.run.id)
    assert run.error is not None and lifecycle.is_lost(run)
    assert (
        run.error.message == f"process lost: worker pid {submission.worker.record.pid} on "
        f"{submission.worker.record.host} exited with code 3"
    )  # type: ignore[attr-defined]
    assert f"train --resume {run.id[:12]}" in (run.error.hint or "")
    assert all(child.status.is_terminal for child in session.store.list_child_runs(run.id))


def test_cancel_of_a_run_nobody_picked_up_is_immediate(session: WorkspaceSession) -> None:
    experiment = session.store.get_or_create_experiment("exp-1")
    not_started = session.store.create_run(experiment.id, compute="local")
    assert runs.cancel_run(session, not_started.id).status is RunStatus.CANCELED
    queued = session.store.create_run(experiment.id, compute="local")
    session.store.set_run_status(queued.id, RunStatus.QUEUED)
    assert runs.cancel_run(session, queued.id).status is RunStatus.CANCELED
    with pytest.raises(InvalidStateError, match="already ended") as info:
        runs.cancel_run(session, queued.id)
    assert "modelbuilder run show" in (info.value.hint or "")


def test_cancel_stops_a_running_worker_within_seconds(session: WorkspaceSession, data: Path) -> None:
    submission = submit_training(session, fake_config(data, trials=3, epochs=1000, epoch_seconds=0.02))
    for update in runs.follow_run(session, submission.run.id, submission.worker, timeout=60):
        if update.children:
            break
    requested = time.monotonic()
    assert runs.cancel_run(session, submission.run.id).status is RunStatus.CANCEL_REQUESTED
    assert _wait(session, submission) is RunStatus.CANCELED
    assert time.monotonic() - requested < 10
    run = session.store.get_run(submission.run.id)
    assert {"bestModel.onnx", "MLModel.zip"} <= {a.path for a in session.store.list_artifacts(run.id)}
    result = runs.load_result(session, run.id, session.folder / "out")
    assert result is not None and result.canceled


def test_kill_run_ends_the_run_canceled_at_once(session: WorkspaceSession, data: Path) -> None:
    submission = submit_training(session, fake_config(data, trials=3, epochs=1000, epoch_seconds=0.02))
    for update in runs.follow_run(session, submission.run.id, submission.worker, timeout=60):
        if update.children:
            break
    run = runs.kill_run(session, submission.run.id)  # finds the worker from its record
    assert run.status is RunStatus.CANCELED
    assert submission.worker.status().is_final
    assert all(c.status is RunStatus.CANCELED for c in session.store.list_child_runs(run.id))


def test_download_outputs_needs_artifacts(session: WorkspaceSession, data: Path, tmp_path: Path) -> None:
    experiment = session.store.get_or_create_experiment("exp-1")
    empty = session.store.create_run(experiment.id)
    with pytest.raises(InvalidStateError, match="no recorded artifacts"):
        runs.download_outputs(session, empty.id, tmp_path / "out")
    submission = submit_training(session, fake_config(data, trials=1))
    assert _wait(session, submission) is RunStatus.COMPLETED
    found = runs.download_outputs(session, submission.run.id, tmp_path / "out")
    assert (found["flowers.Model"] / "pyproject.toml").is_file()
    raw = runs.download_outputs(session, submission.run.id, tmp_path / "raw", raw=True)
    assert "logs/run.log" in raw and (tmp_path / "raw" / "flowers.Model.zip").is_file()
