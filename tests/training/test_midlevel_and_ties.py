"""The mid-level linear head (channel statistics of the backbone's stem) and what ships when the
validation split cannot rank the trials (every one at 100%): the equal-weight ensemble of the distinct
ones, not the most confident one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from factories import make_image_folder  # noqa: E402
from modelbuilder.pipeline import load_model  # noqa: E402
from modelbuilder.pipeline.preprocess import PreprocessSpec  # noqa: E402
from modelbuilder.training.checkpoint import CheckpointDir, FinishedTrial  # noqa: E402
from modelbuilder.training.config import TrainingConfig  # noqa: E402
from modelbuilder.training.evaluation import TIE_PARAM, log_loss, selection_rank  # noqa: E402
from modelbuilder.training.onnx_export import check_parity, export_onnx  # noqa: E402
from modelbuilder.training.plan import DataFacts, make_plan  # noqa: E402
from modelbuilder.training.reporter import RecordingReporter  # noqa: E402
from modelbuilder.training.trainer import _rank, run_training  # noqa: E402
from modelbuilder.training.trials.base import TrialOutcome  # noqa: E402
from modelbuilder.training.trials.ensemble import best_ensemble, distinct_models, saturated_tie  # noqa: E402
from modelbuilder.training.trials.midlevel import (  # noqa: E402
    MAX_IMAGES,
    ChannelStats,
    MidlevelLinearTrial,
    pooled_stats,
)

SPEC = PreprocessSpec(resize_size=8, crop_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
OTHER_SPEC = PreprocessSpec(resize_size=16, crop_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def outcome(name: str, probs: np.ndarray, y: np.ndarray, spec: PreprocessSpec = SPEC) -> TrialOutcome:
    accuracy = float((probs.argmax(1) == y).mean())
    return TrialOutcome(name, name, "test", spec, nn.Identity(), accuracy, probs, 0.1)


def sure(y: np.ndarray, confidence: float) -> np.ndarray:
    """Right on every image with probability ``confidence`` (the rest shared by the other labels)."""
    classes = int(y.max()) + 1
    rest = (1 - confidence) / (classes - 1)
    return np.eye(classes)[y] * (confidence - rest) + rest


def test_channel_statistics_match_the_cached_pooling_and_export(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stem = rng.standard_normal((7, 5, 4, 4)).astype(np.float16)  # as cached: float16 rows
    pooled = pooled_stats(stem, chunk=3)  # chunks that do not divide the rows
    assert pooled.shape == (7, 10) and pooled.dtype == np.float32
    expected = ChannelStats()(torch.from_numpy(stem.astype(np.float32))).numpy()
    np.testing.assert_allclose(pooled, expected, atol=1e-5)
    np.testing.assert_allclose(pooled[:, 5:], stem.astype(np.float32).std(axis=(2, 3)), atol=1e-5)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2), ChannelStats(), nn.Linear(10, 3)).eval()
    sample = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    check_parity(model, export_onnx(model, 9, tmp_path / "midlevel.onnx"), sample)


def test_the_trial_applies_only_where_the_stem_array_stays_small() -> None:
    trial = MidlevelLinearTrial()
    photos = make_plan("test_tiny", DataFacts(200, 50, 96, 3, 4), 250, 60.0)
    estimate = trial.estimate(photos, 60.0)
    assert estimate is not None and estimate.weight == 0.0 and 0 < estimate.fixed_seconds <= 0.15 * 60
    large = make_plan("test_tiny", DataFacts(MAX_IMAGES, 1000, 96, 3, 4), MAX_IMAGES + 1000, 60.0)
    assert trial.estimate(large, 60.0) is None
    # Small images (28-px clothes: the scratch CNN's data) do not get it either.
    small = make_plan("test_tiny", DataFacts(200, 50, 28, 1, 4), 250, 60.0)
    assert trial.estimate(small, 60.0) is None


def test_a_saturated_tie_ships_the_equal_weight_average_of_the_distinct_perfect_trials() -> None:
    y = np.array([0, 1, 2, 3] * 15)
    confident = sure(y, 0.999)
    other_view = sure(y, 0.9)
    other_view[::4] = sure(y, 0.6)[::4]  # another model: unsure where the first is not, still right
    copy = confident * (1 + 1e-4 * np.random.default_rng(0).standard_normal(confident.shape))
    copy /= copy.sum(1, keepdims=True)  # a fine-tune that never left its warm start, up to float noise
    weak = sure(y, 0.9)
    weak[:3] = weak[:3, ::-1]  # three wrong: not part of a tie at 100%
    trials = [outcome("linear", confident, y), outcome("partial", copy, y),
              outcome("midlevel", other_view, y), outcome("weak", weak, y)]
    # The log-loss rule alone keeps the most confident trial: an average with a less sure one is less sure.
    assert best_ensemble(trials, y) is None
    chosen = saturated_tie(trials, y)
    assert chosen is not None
    members, weights, accuracy, probs = chosen
    assert [m.name for m in members] == ["linear", "midlevel"] and weights == (0.5, 0.5) and accuracy == 1.0
    np.testing.assert_allclose(probs, (confident + other_view) / 2)
    assert [m.name for m in distinct_models(trials[:2])] == ["linear"]
    # One distinct perfect model (and its copy), or perfect trials with different inputs: no tie to break.
    assert saturated_tie(trials[:2] + trials[3:], y) is None
    assert saturated_tie([outcome("a", confident, y), outcome("b", other_view, y, OTHER_SPEC)], y) is None
    # Validation that can rank the trials (not every image right) leaves the choice to the usual rules.
    also_weak = sure(y, 0.7)
    also_weak[-3:] = also_weak[-3:, ::-1]
    assert saturated_tie([outcome("a", weak, y), outcome("b", also_weak, y)], y) is None


def test_the_tie_ensemble_ranks_above_its_members_but_never_above_a_more_accurate_trial(
        tmp_path: Path) -> None:
    y = np.array([0, 1] * 10)
    members = (sure(y, 0.999) + sure(y, 0.9)) / 2
    assert log_loss(y, members) > log_loss(y, sure(y, 0.999))
    tie = selection_rank(1.0, {TIE_PARAM: True}, y, members)
    assert tie > selection_rank(1.0, {}, y, sure(y, 0.999))
    assert selection_rank(1.0, {}, y, sure(y, 0.999)) > selection_rank(1.0, {}, y, sure(y, 0.9))
    wrong = sure(y, 0.9)
    wrong[0] = wrong[0, ::-1]
    assert selection_rank(0.95, {TIE_PARAM: True}, y, wrong) < selection_rank(1.0, {}, y, sure(y, 0.6))
    assert selection_rank(1.0, {}, y, np.zeros((3, 2)))[2] == -np.inf  # probabilities that do not fit
    # The trainer's choice among checkpointed trials follows the same order.
    checkpoints = CheckpointDir(tmp_path / "ck")
    finished = []
    for name, probs, params in (("linear", sure(y, 0.999), {}), ("midlevel", sure(y, 0.9), {}),
                                ("ensemble", members, {TIE_PARAM: True})):
        trial = FinishedTrial(name, name, "test", 1.0, 1.0, SPEC.to_dict(), params, f"{name}.onnx",
                              f"{name}.probs.npy")
        checkpoints.add(trial, probs, 1.0)
        finished.append(trial)
    assert max(finished, key=lambda t: _rank(t, checkpoints, y)).name == "ensemble"
    assert max(finished[:2], key=lambda t: _rank(t, checkpoints, y)).name == "linear"


def test_the_midlevel_head_trains_exports_and_can_ship(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "shapes", classes=3, per_class=10, size=72)
    reporter = RecordingReporter()
    config = TrainingConfig(data=str(data), architecture="test_tiny", time_budget=8,
                            strategies=("midlevel_linear",))
    result = run_training(config, reporter, tmp_path / "out")
    assert result.strategy == "midlevel_linear"
    trial = result.trials[0]
    assert trial.status == "Completed" and trial.params["statistics"] == 2 * 8  # the tiny stem: 8 channels
    evaluation = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    engine = load_model(tmp_path / "out" / "MLModel.zip")
    item = evaluation["validation_items"][0]
    assert engine.predict(item["path"]).prediction == item["predicted_label"]
