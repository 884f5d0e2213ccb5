"""StoreReporter (trainer events -> store) and OutputRecorder (outputs -> verified artifacts), in-process."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbuilder.artifacts import LocalArtifactStore
from modelbuilder.compute.outputs import (
    OUTPUTS_NAME,
    OutputRecorder,
    materialize_outputs,
    read_outputs_manifest,
    result_from_dict,
    result_to_dict,
)
from modelbuilder.compute.store_reporter import StoreReporter
from modelbuilder.entities import Run, RunError, RunStatus
from modelbuilder.errors import InvalidParameterError, InvalidStateError
from modelbuilder.store import SqlAlchemyStore, lifecycle, sqlite_file_url
from modelbuilder.training.config import TrainingResult, TrialSummary


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    opened = SqlAlchemyStore(sqlite_file_url(tmp_path / "ws.db"), workspace="ws1")
    yield opened
    opened.close()


def _running_run(store: SqlAlchemyStore) -> Run:
    experiment = store.get_or_create_experiment("exp")
    run = store.create_run(experiment.id, compute="local")
    for status in (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING):
        run = store.set_run_status(run.id, status)
    return run


@pytest.fixture
def reporter(store: SqlAlchemyStore, tmp_path: Path) -> Iterator[StoreReporter]:
    created = StoreReporter(store, _running_run(store), log_path=tmp_path / "run.log", flush_interval=60)
    yield created
    created.close()


def test_events_are_batched_until_flush(reporter: StoreReporter, store: SqlAlchemyStore) -> None:
    run_id = reporter.run.id
    for step in range(50):
        reporter.metric("loss", 1.0 / (step + 1), step)
    reporter.log("hello\nworld")
    reporter.phase("features", "extracting")
    reporter.progress("images", 3, 10)
    assert store.get_metric_history(run_id, "loss") == []
    reporter.flush()
    assert len(store.get_metric_history(run_id, "loss")) == 50
    assert [line.text for line in store.get_log_lines(run_id)] == ["hello", "world", "[features] extracting"]
    assert store.get_run(run_id).phase == "features: images 3/10"
    assert (
        "hello" in reporter.log_path.read_text() and "[features] extracting" in reporter.log_path.read_text()
    )


def test_trials_become_child_runs_with_their_metrics(reporter: StoreReporter, store: SqlAlchemyStore) -> None:
    reporter.trial_started("linear-head", {"lr": 0.1, "path": Path("/x")})
    for epoch in range(3):
        reporter.metric("val_accuracy", 0.5 + epoch / 10, epoch, trial="linear-head")
    reporter.trial_ended("linear-head", "Completed", {"val_accuracy": 0.75})
    reporter.trial_started("finetune", {})
    reporter.trial_ended("finetune", "Canceled", {})
    reporter.metric("loss", 0.3, 0, trial="implicit")  # a trial never announced still gets a child run
    reporter.trial_ended("implicit", "exploded", {})
    children = store.list_child_runs(reporter.run.id)
    assert [c.name for c in children] == ["linear-head", "finetune", "implicit"]
    assert [c.status for c in children] == [RunStatus.COMPLETED, RunStatus.CANCELED, RunStatus.FAILED]
    first = children[0]
    assert first.params == {"lr": 0.1, "path": "/x"}
    assert first.latest_metrics["val_accuracy"] == 0.75  # the final value wins over epoch 2's 0.7
    assert len(store.get_metric_history(first.id, "val_accuracy")) == 4
    assert children[2].error == RunError("TrainingError", "trial ended exploded")
    assert reporter.child_runs == {c.name: c.id for c in children}


def test_heartbeat_turns_a_cancel_request_into_should_stop(
    reporter: StoreReporter, store: SqlAlchemyStore
) -> None:
    reporter.trial_started("t1", {})
    assert reporter.heartbeat() is RunStatus.RUNNING and not reporter.should_stop()
    store.set_run_status(reporter.run.id, RunStatus.CANCEL_REQUESTED)
    assert reporter.heartbeat() is RunStatus.CANCEL_REQUESTED
    assert reporter.should_stop() and reporter.stop_reason == "cancel requested"
    assert not reporter.run_ended_elsewhere


def test_a_run_ended_elsewhere_stops_the_trainer_and_records_nothing_more(
    reporter: StoreReporter, store: SqlAlchemyStore
) -> None:
    lifecycle.mark_lost(store, reporter.run.id, "test")
    reporter.metric("loss", 1.0)
    reporter.flush()  # refused by the store: logged, never raised
    assert reporter.should_stop() and reporter.run_ended_elsewhere
    assert store.get_metric_history(reporter.run.id, "loss") == []


def test_background_thread_flushes_and_beats(store: SqlAlchemyStore, tmp_path: Path) -> None:
    run = _running_run(store)
    before = store.get_run(run.id).heartbeat_at
    reporter = StoreReporter(
        store, run, log_path=tmp_path / "r.log", flush_interval=0.05, heartbeat_interval=0.05
    ).start()
    try:
        reporter.metric("x", 1.0)
        import time

        deadline = time.monotonic() + 5
        while not store.get_metric_history(run.id, "x") and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        reporter.close()
    assert store.get_metric_history(run.id, "x")
    after = store.get_run(run.id).heartbeat_at
    assert before is not None and after is not None and after > before


def test_lifecycle_end_walks_the_transition_table(store: SqlAlchemyStore) -> None:
    completed, canceled, failed = _running_run(store), _running_run(store), _running_run(store)
    lifecycle.end(store, completed.id, RunStatus.COMPLETED)
    lifecycle.end(store, canceled.id, RunStatus.CANCELED)
    assert store.get_run(completed.id).status is RunStatus.COMPLETED
    assert store.get_run(canceled.id).status is RunStatus.CANCELED
    lifecycle.end(store, failed.id, RunStatus.FAILED, RunError("TrainingError", "boom"))
    assert store.get_run(failed.id).error == RunError("TrainingError", "boom")
    with pytest.raises(InvalidStateError):
        lifecycle.end(store, completed.id, RunStatus.CANCELED)


def _outputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bestModel.onnx").write_bytes(b"onnx" * 100)
    package = folder / "Demo.Model" / "demo"
    package.mkdir(parents=True)
    (package / "consume_model.py").write_text("def predict(x):\n    return x\n")
    (folder / "Demo.Model" / "pyproject.toml").write_text("[project]\n")
    script = folder / "Demo.ConsoleApp" / "main.py"
    script.parent.mkdir()
    script.write_text("print('hi')\n")
    script.chmod(0o755)
    return {
        "bestModel.onnx": folder / "bestModel.onnx",
        "Demo.Model": folder / "Demo.Model",
        "Demo.ConsoleApp": folder / "Demo.ConsoleApp",
    }


def test_recorder_stores_files_and_zipped_folders_and_materialises_them(
    store: SqlAlchemyStore, tmp_path: Path
) -> None:
    run = _running_run(store)
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    recorder = OutputRecorder(store, artifacts, run.id, tmp_path / "zips")
    for name, path in _outputs(tmp_path / "work").items():
        assert recorder.record(path, name) is not None
    assert recorder.record(tmp_path / "work" / "bestModel.onnx", "bestModel.onnx") is None  # unchanged
    recorder.record_manifest()
    recorded = {a.path: a for a in store.list_artifacts(run.id)}
    assert set(recorded) == {"bestModel.onnx", "Demo.Model.zip", "Demo.ConsoleApp.zip", OUTPUTS_NAME}
    assert artifacts.verify(run.id, recorded.values())
    with zipfile.ZipFile(artifacts.resolve(run.id, "Demo.Model.zip")) as archive:
        assert sorted(archive.namelist()) == ["Demo.Model/demo/consume_model.py", "Demo.Model/pyproject.toml"]
    assert read_outputs_manifest(artifacts, run.id)["Demo.Model"] == {
        "kind": "folder",
        "artifact": "Demo.Model.zip",
    }

    out = tmp_path / "out"
    (out / "Demo.Model").mkdir(parents=True)
    (out / "Demo.Model" / "stale.txt").write_text("old")  # replaced, not merged
    found = materialize_outputs(artifacts, run.id, out)
    assert set(found) == {"bestModel.onnx", "Demo.Model", "Demo.ConsoleApp"}
    assert (out / "Demo.Model" / "demo" / "consume_model.py").read_text().startswith("def predict")
    assert not (out / "Demo.Model" / "stale.txt").exists()
    assert (out / "Demo.ConsoleApp" / "main.py").stat().st_mode & 0o111
    assert (out / "bestModel.onnx").read_bytes() == b"onnx" * 100
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers

    (tmp_path / "work" / "bestModel.onnx").write_bytes(b"better model")
    assert recorder.record(tmp_path / "work" / "bestModel.onnx", "bestModel.onnx") is not None
    assert artifacts.read(run.id, "bestModel.onnx") == b"better model"


def test_recorder_refuses_unsafe_names_and_missing_files(store: SqlAlchemyStore, tmp_path: Path) -> None:
    run = _running_run(store)
    recorder = OutputRecorder(store, LocalArtifactStore(tmp_path / "a"), run.id, tmp_path / "zips")
    with pytest.raises(InvalidParameterError):
        recorder.record(tmp_path, "../escape")
    with pytest.raises(FileNotFoundError):
        recorder.record(tmp_path / "missing.onnx", "bestModel.onnx")
    assert store.list_artifacts(run.id) == []


def test_materialize_refuses_a_zip_with_entries_outside_its_folder(
    store: SqlAlchemyStore, tmp_path: Path
) -> None:
    run = _running_run(store)
    artifacts = LocalArtifactStore(tmp_path / "a")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("Other/x.py", "x")
    artifacts.put_file(run.id, evil, "Demo.Model.zip")
    manifest = {
        "format_version": 1,
        "outputs": {"Demo.Model": {"kind": "folder", "artifact": "Demo.Model.zip"}},
    }
    artifacts.put_bytes(run.id, json.dumps(manifest).encode(), OUTPUTS_NAME)
    with pytest.raises(InvalidParameterError, match="outside 'Demo.Model/'"):
        materialize_outputs(artifacts, run.id, tmp_path / "out")


def test_result_survives_the_json_round_trip(tmp_path: Path) -> None:
    result = TrainingResult(
        accuracy=0.9,
        macro_accuracy=0.85,
        backbone="test_tiny",
        strategy="linear",
        labels=["a", "b"],
        seconds=3.5,
        output_dir=tmp_path,
        files={"MLModel.zip": tmp_path / "MLModel.zip"},
        trials=[TrialSummary("t0", "linear", "test_tiny", 32, 0.9, 1.0)],
        skipped_images=[{"path": "a/x.png", "reason": "truncated"}],
        evaluation={"accuracy": 0.9},
    )
    data = json.loads(json.dumps(result_to_dict(result)))
    again = result_from_dict(data, tmp_path / "elsewhere")
    assert again.files == {"MLModel.zip": tmp_path / "elsewhere" / "MLModel.zip"}
    assert (again.accuracy, again.trials, again.skipped_images) == (0.9, result.trials, result.skipped_images)
    data["format_version"] = 99
    with pytest.raises(InvalidParameterError, match="format version"):
        result_from_dict(data, tmp_path)
