"""run_training end to end with the tiny test backbone: outputs, parity, budget, cancel, resume."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from factories import make_image_folder  # noqa: E402
from modelbuilder.errors import DatasetError  # noqa: E402
from modelbuilder.pipeline import load_model  # noqa: E402
from modelbuilder.pipeline.bundle import verify_bundle  # noqa: E402
from modelbuilder.pipeline.preprocess import normalize, preprocess, to_uint8  # noqa: E402
from modelbuilder.training.config import TrainingConfig  # noqa: E402
from modelbuilder.training.reporter import RecordingReporter  # noqa: E402
from modelbuilder.training.trainer import run_training  # noqa: E402

OUTPUTS = {"bestModel.onnx", "bestModelMap.json", "MLModel.zip", "evaluation.json"}


class StopAfter(RecordingReporter):
    """Requests cancellation once ``trials`` trials have finished."""

    def __init__(self, trials: int) -> None:
        super().__init__()
        self.trials = trials

    def should_stop(self) -> bool:
        return len(self.of_kind("trial_ended")) >= self.trials


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "shapes", classes=3, per_class=12, size=32)


def config(data: Path, budget: float = 6, **kwargs: object) -> TrainingConfig:
    return TrainingConfig(data=str(data), architecture="test_tiny", time_budget=budget, **kwargs)  # type: ignore[arg-type]


def test_training_writes_every_output_and_reports_them(data: Path, tmp_path: Path) -> None:
    reporter = RecordingReporter()
    start = time.monotonic()
    result = run_training(config(data, 20), reporter, tmp_path / "out")
    wall = time.monotonic() - start
    assert wall <= 20 * 1.1 + 8  # budget + 10% + scan/export slack on a shared 2-core machine
    out = tmp_path / "out"
    assert OUTPUTS <= {p.name for p in out.iterdir()}
    assert (out / "shapes.Model").is_dir() and (out / "shapes.ConsoleApp" / "main.py").is_file()
    assert json.loads((out / "bestModelMap.json").read_text()) == ["label0", "label1", "label2"]
    manifest = verify_bundle(out / "MLModel.zip")
    assert manifest["labels"] == ["label0", "label1", "label2"]
    assert manifest["input"]["name"] == "input1" and manifest["output"]["name"] == "output1"
    assert {name for _, name in reporter.of_kind("artifact")} >= OUTPUTS
    started = [t for t, _ in reporter.of_kind("trial_started")]
    assert started[:2] == ["linear", "partial_finetune"]  # small images: no midlevel_linear
    assert len(reporter.of_kind("trial_ended")) == len(started)
    evaluation = json.loads((out / "evaluation.json").read_text())
    for key in ("accuracy", "macro_accuracy", "per_class", "confusion_matrix", "most_confidently_wrong",
                "validation_items", "trials", "skipped_images"):
        assert key in evaluation
    assert result.accuracy == pytest.approx(evaluation["accuracy"])
    assert result.files["MLModel.zip"] == out / "MLModel.zip"
    assert not list(out.glob(".*"))  # no temp files or checkpoint folders left behind


def test_onnx_and_torch_agree_on_every_validation_image(data: Path, tmp_path: Path) -> None:
    """The shipped model predicts what validation measured: same top-1 as the recorded evaluation."""
    run_training(config(data, strategies=("linear", "partial_finetune")), RecordingReporter(),
                 tmp_path / "out")
    evaluation = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    engine = load_model(tmp_path / "out" / "MLModel.zip")
    for item in evaluation["validation_items"]:
        output = engine.predict(item["path"])
        assert output.prediction == item["predicted_label"]
        assert max(output.score) == pytest.approx(item["score"], abs=5e-4)  # torch vs onnxruntime float32


def test_prediction_preprocessing_equals_training_preprocessing(data: Path, tmp_path: Path) -> None:
    run_training(config(data, strategies=("linear",)), RecordingReporter(), tmp_path / "out")
    engine = load_model(tmp_path / "out" / "MLModel.zip")
    image = next((data / "label1").iterdir())
    training_side = normalize(to_uint8(image, engine.preprocessing)[None], engine.preprocessing)[0]
    np.testing.assert_array_equal(engine.prepare(image), training_side)
    np.testing.assert_array_equal(engine.prepare(image), preprocess(image, engine.preprocessing))


def test_cancel_keeps_the_best_model_so_far(data: Path, tmp_path: Path) -> None:
    reporter = StopAfter(1)
    result = run_training(config(data), reporter, tmp_path / "out")
    assert result.canceled
    assert [t.name for t in result.trials] == ["linear"]
    assert (tmp_path / "out" / "MLModel.zip").is_file()


def test_resume_skips_finished_trials(data: Path, tmp_path: Path) -> None:
    checkpoints = tmp_path / "ckpt"
    first = run_training(config(data, 20), StopAfter(1), tmp_path / "out1", checkpoint_dir=checkpoints)
    assert first.canceled
    reporter = RecordingReporter()
    second = run_training(config(data, 20), reporter, tmp_path / "out2", checkpoint_dir=checkpoints)
    assert not second.canceled
    started = [t for t, _ in reporter.of_kind("trial_started")]
    assert "linear" not in started and "partial_finetune" in started
    assert any("already finished before resume" in line for _, line in reporter.of_kind("log"))
    assert {t.name for t in second.trials} >= {"linear", "partial_finetune"}


def test_bad_data_fails_before_training(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "one", classes=1, per_class=4)
    with pytest.raises(DatasetError):
        run_training(config(folder), RecordingReporter(), tmp_path / "out")
    assert not (tmp_path / "out" / "MLModel.zip").exists()


def test_skipped_images_are_listed_in_the_evaluation(data: Path, tmp_path: Path) -> None:
    good = (data / "label0" / "label0_0.png").read_bytes()
    (data / "label0" / "broken.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    result = run_training(config(data, strategies=("linear",)), RecordingReporter(), tmp_path / "out")
    assert [s["kind"] for s in result.skipped_images] == ["corrupt"]
    evaluation = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert evaluation["skipped_images"][0]["path"].endswith("broken.png")
    with zipfile.ZipFile(tmp_path / "out" / "MLModel.zip") as archive:
        assert "manifest.json" in archive.namelist()


def test_subsampling_keeps_every_label_and_its_share() -> None:
    from modelbuilder.training.trainer import subsample_stratified

    items = [object()] * 1000
    y = np.array([0] * 900 + [1] * 90 + [2] * 10)
    kept, kept_y = subsample_stratified(items, y, 100, seed=0)  # type: ignore[arg-type]
    assert len(kept) == len(kept_y)
    counts = np.bincount(kept_y)
    assert counts.tolist() == [90, 9, 2]  # proportional, at least 2 per label
    again = subsample_stratified(items, y, 100, seed=0)[1]  # type: ignore[arg-type]
    assert np.array_equal(again, kept_y)
    assert subsample_stratified(items, y, 5000, seed=0)[1] is y  # type: ignore[arg-type]


def test_the_run_log_names_each_problem_and_sums_up_each_kind_of_note() -> None:
    from modelbuilder.data import DataIssue
    from modelbuilder.training.trainer import _log_issues

    notes = [DataIssue(f"a/{i}.png", "color_mode", f"a/{i}.png converted to RGB from 8-bit greyscale (L).",
                       "converted") for i in range(500)]
    broken = [DataIssue(f"b/{i}.png", "corrupt", f"b/{i}.png is not a readable image.", "skipped")
              for i in range(7)]
    reporter = RecordingReporter()
    _log_issues(reporter, notes + broken)
    lines = [str(args[1]) for kind, args in reporter.events if kind == "log"]
    assert lines[0] == ("data: note [color_mode/converted] 500 files, "
                        "e.g. a/0.png converted to RGB from 8-bit greyscale (L).")
    assert lines[1:] == [f"data: [corrupt/skipped] b/{i}.png is not a readable image." for i in range(7)]
