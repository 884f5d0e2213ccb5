"""The worker's run lifecycle, executed in-process with the fake trainer (fast; no subprocess)."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factories import make_image_folder
from fake_trainer import TARGET
from modelbuilder.artifacts import LocalArtifactStore
from modelbuilder.compute import worker as worker_module
from modelbuilder.compute.job import RunFolders, TrainingJob
from modelbuilder.compute.outputs import LOG_NAME, OUTPUTS_NAME, RESULT_NAME
from modelbuilder.compute.worker import DEBUG_LOG_NAME, Worker, load_target, main, run_error
from modelbuilder.entities import RunError, RunStatus
from modelbuilder.errors import DatasetError, InvalidParameterError, TrainingError, WorkspaceError
from modelbuilder.store import SqlAlchemyStore, lifecycle, sqlite_file_url
from modelbuilder.training.config import TrainingConfig


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    opened = SqlAlchemyStore(sqlite_file_url(tmp_path / "ws" / "workspace.db"), workspace="ws1")
    yield opened
    opened.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)


def _queued_job(
    store: SqlAlchemyStore, tmp_path: Path, data: Path, target: str = TARGET, **fake: Any
) -> TrainingJob:
    experiment = store.get_or_create_experiment("flowers")
    run = store.create_run(experiment.id, compute="local")
    store.set_run_status(run.id, RunStatus.QUEUED)
    config = TrainingConfig(data=str(data), time_budget=10, extra={"fake": {"epoch_seconds": 0.0, **fake}})
    return TrainingJob(
        run_id=run.id,
        workspace="ws1",
        store_url=sqlite_file_url(tmp_path / "ws" / "workspace.db"),
        artifact_root=str(tmp_path / "ws" / "artifacts"),
        config=config.to_dict(),
        target=target,
    )


def _worker(job: TrainingJob, store: SqlAlchemyStore, tmp_path: Path) -> Worker:
    return Worker(job, store, LocalArtifactStore(tmp_path / "ws" / "artifacts"))


def _assert_told_once(texts: list[str], error: str, hint: str) -> None:
    """The Error line is in the run log once, followed at once by its Hint line (also once)."""
    assert texts.count(error) == 1 and texts.count(hint) == 1, texts
    assert texts[texts.index(error) + 1] == hint


def test_completed_run_has_verified_outputs_trials_metrics_and_log(
    store: SqlAlchemyStore, tmp_path: Path, data: Path
) -> None:
    job = _queued_job(store, tmp_path, data, trials=2)
    worker = _worker(job, store, tmp_path)
    assert worker.run() == 0
    run = store.get_run(job.run_id)
    assert run.status is RunStatus.COMPLETED and run.started_at and run.ended_at
    recorded = store.list_artifacts(run.id)
    names = {a.path for a in recorded}
    assert {
        "bestModel.onnx",
        "bestModelMap.json",
        "MLModel.zip",
        "evaluation.json",
        "flowers.Model.zip",
        "flowers.ConsoleApp.zip",
        OUTPUTS_NAME,
        RESULT_NAME,
        LOG_NAME,
    } == names
    assert worker.artifacts.verify(run.id, recorded)
    assert {"accuracy", "macro_accuracy", "skipped_images", "best_val_accuracy"} <= set(run.latest_metrics)
    assert run.latest_metrics["skipped_images"] == 1.0
    children = store.list_child_runs(run.id)
    assert [(c.name, c.status) for c in children] == [
        ("trial-0", RunStatus.COMPLETED),
        ("trial-1", RunStatus.COMPLETED),
    ]
    log = worker.artifacts.read(run.id, LOG_NAME).decode()
    assert "[scanning]" in log and "Run Completed" in log
    folders = RunFolders.of_job(job)
    assert not folders.work_dir.exists() and not folders.checkpoint_dir().exists()  # cleaned up


def test_an_expected_error_is_told_once_and_its_traceback_goes_to_the_debug_log(
    store: SqlAlchemyStore, tmp_path: Path, data: Path
) -> None:
    job = _queued_job(store, tmp_path, data, fail="dataset")
    worker = _worker(job, store, tmp_path)
    assert worker.run() == 1
    run = store.get_run(job.run_id)
    message = "Label 'label0' has only 1 image; at least 2 are needed."
    assert run.status is RunStatus.FAILED
    assert run.error == RunError("DatasetError", message, "Add images.")
    texts = [line.text for line in store.get_log_lines(run.id)]
    assert not any("Traceback" in text for text in texts), texts
    _assert_told_once(texts, f"Error: {message}", "Hint: Add images.")
    assert sum(message in text for text in texts) == 1
    recorded_log = worker.artifacts.read(run.id, LOG_NAME).decode()
    assert "Traceback" not in recorded_log and recorded_log.count(message) == 1
    debug = (RunFolders.of_job(job).state_dir / DEBUG_LOG_NAME).read_text()
    assert "Traceback" in debug and "DatasetError" in debug and "fake_trainer.py" in debug
    assert worker.artifacts.verify(run.id, store.list_artifacts(run.id))
    assert RunFolders.of_job(job).checkpoint_dir().exists()  # kept for --resume


def test_an_unexpected_error_keeps_its_traceback_in_the_run_log(
    store: SqlAlchemyStore, tmp_path: Path, data: Path
) -> None:
    job = _queued_job(store, tmp_path, data, fail="crash")
    worker = _worker(job, store, tmp_path)
    assert worker.run() == 1
    run = store.get_run(job.run_id)
    assert run.error is not None
    assert (run.error.type, run.error.message) == ("RuntimeError", "RuntimeError: fake trainer crashed")
    assert f"modelbuilder run logs {run.id[:12]}" in (run.error.hint or "")
    assert type(run.error.to_exception()) is TrainingError
    texts = [line.text for line in store.get_log_lines(run.id)]
    assert any("Traceback" in text for text in texts)
    hint = f"Hint: {run.error.hint}"
    _assert_told_once(texts, "Error: RuntimeError: fake trainer crashed", hint)
    assert LOG_NAME in {a.path for a in store.list_artifacts(run.id)}
    # A heartbeat after the worker failed the run itself (it fires at any time under load) must not
    # take the Failed status for another process ending the run.
    assert worker.reporter is not None
    worker.reporter.heartbeat()
    assert worker.reporter.stop_reason is None and not worker.reporter.run_ended_elsewhere


def test_a_bad_target_fails_the_run(store: SqlAlchemyStore, tmp_path: Path, data: Path) -> None:
    job = _queued_job(store, tmp_path, data, target="no_colon_here")
    assert _worker(job, store, tmp_path).run() == 1
    error = store.get_run(job.run_id).error
    assert error is not None and error.type == "InvalidParameterError"
    assert "must be 'module:function'" in error.message


def test_cancel_during_training_keeps_the_partial_result(
    store: SqlAlchemyStore, tmp_path: Path, data: Path
) -> None:
    job = _queued_job(store, tmp_path, data, trials=3, epochs=400, epoch_seconds=0.01)
    worker = _worker(job, store, tmp_path)
    worker.heartbeat_interval = 0.1

    def cancel_when_running() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if store.list_child_runs(job.run_id):
                lifecycle.request_cancel(store, job.run_id)
                return
            time.sleep(0.02)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    started = time.monotonic()
    assert worker.run() == 0
    canceller.join()
    assert time.monotonic() - started < 10
    run = store.get_run(job.run_id)
    assert run.status is RunStatus.CANCELED
    assert {"bestModel.onnx", "MLModel.zip", RESULT_NAME} <= {a.path for a in store.list_artifacts(run.id)}
    assert [c.status for c in store.list_child_runs(run.id)] == [RunStatus.CANCELED]


def test_a_run_canceled_before_the_worker_starts_never_trains(
    store: SqlAlchemyStore, tmp_path: Path, data: Path
) -> None:
    job = _queued_job(store, tmp_path, data)
    store.set_run_status(job.run_id, RunStatus.CANCEL_REQUESTED)  # the store allows it from Queued
    assert _worker(job, store, tmp_path).run() == 0
    run = store.get_run(job.run_id)
    assert run.status is RunStatus.CANCELED and run.started_at is None
    assert store.list_child_runs(run.id) == []


def test_a_terminal_run_is_left_alone(store: SqlAlchemyStore, tmp_path: Path, data: Path) -> None:
    job = _queued_job(store, tmp_path, data)
    lost = lifecycle.mark_lost(store, job.run_id, "earlier")
    assert _worker(job, store, tmp_path).run() == 1
    assert store.get_run(job.run_id).error == lost.error


def test_a_run_canceled_while_queued_is_left_canceled(
    store: SqlAlchemyStore, tmp_path: Path, data: Path
) -> None:
    job = _queued_job(store, tmp_path, data)
    assert lifecycle.request_cancel(store, job.run_id).status is RunStatus.CANCELED
    assert _worker(job, store, tmp_path).run() == 0
    assert store.get_run(job.run_id).started_at is None


def test_outputs_that_fail_verification_fail_the_run(
    store: SqlAlchemyStore, tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _queued_job(store, tmp_path, data, trials=1)
    worker = _worker(job, store, tmp_path)
    monkeypatch.setattr(worker.artifacts, "find_mismatches", lambda run_id, artifacts: ["bestModel.onnx"])
    assert worker.run() == 1
    run = store.get_run(job.run_id)
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "failed verification after writing: bestModel.onnx" in run.error.message


def test_load_target_and_run_error() -> None:
    assert load_target(TARGET).__name__ == "run_training"
    with pytest.raises(InvalidParameterError, match="not a function"):
        load_target("fake_trainer:nothing_here")
    assert run_error(DatasetError("No images.", hint="Add some."), "r1") == RunError(
        "DatasetError", "No images.", "Add some."
    )
    assert run_error(DatasetError("No images."), "r1") == RunError("DatasetError", "No images.")
    unexpected = run_error(KeyError("x"), "abcdef0123456789")
    assert unexpected.message == "KeyError: 'x'" and "run logs abcdef012345" in (unexpected.hint or "")


def test_main_needs_exactly_one_job_file() -> None:
    assert main([]) == 2


def test_a_full_disk_fails_the_run_with_a_clear_no_space_error(
    store: SqlAlchemyStore, tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> Any:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/ws/artifacts/r1/bestModel.onnx")
        except OSError as exc:  # wrapped, as a library may do: the cause still counts
            raise RuntimeError("export failed") from exc

    monkeypatch.setattr(worker_module, "load_target", lambda target: full_disk)
    job = _queued_job(store, tmp_path, data)
    assert _worker(job, store, tmp_path).run() == 1
    run = store.get_run(job.run_id)
    assert run.error is not None and run.error.type == "WorkspaceError"
    assert "No space left on the disk while writing /ws/artifacts/r1/bestModel.onnx" in run.error.message
    assert f"train --resume {run.id[:12]}" in (run.error.hint or "")
    assert type(run.error.to_exception()) is WorkspaceError
    assert not any("Traceback" in line.text for line in store.get_log_lines(run.id))
