"""The search end to end with the tiny test backbone: a custom trial, re-planning, replay, devices."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from factories import make_image_folder  # noqa: E402
from modelbuilder.pipeline import load_model  # noqa: E402
from modelbuilder.pipeline.preprocess import PreprocessSpec  # noqa: E402
from modelbuilder.training.checkpoint import CheckpointDir, FinishedTrial  # noqa: E402
from modelbuilder.training.config import TrainingConfig  # noqa: E402
from modelbuilder.training.evaluation import log_loss, validation_rank  # noqa: E402
from modelbuilder.training.onnx_export import check_parity, export_onnx  # noqa: E402
from modelbuilder.training.plan import DataFacts, Plan, TrialEstimate, allocate, make_plan  # noqa: E402
from modelbuilder.training.registry import register_trial, unregister_trial  # noqa: E402
from modelbuilder.training.reporter import RecordingReporter  # noqa: E402
from modelbuilder.training.trainer import Clock, _rank, run_training  # noqa: E402
from modelbuilder.training.trials.base import TrialContext, TrialOutcome  # noqa: E402
from modelbuilder.training.trials.ensemble import Ensemble, best_ensemble  # noqa: E402
from modelbuilder.training.trials.partial import PartialFinetuneTrial  # noqa: E402
from modelbuilder.training.trials.scratch import (  # noqa: E402
    MAX_PATIENCE,
    PATIENCE_STEPS,
    WIDTHS,
    ChannelMean,
    choose_width,
    compact_cnn,
    epoch_seconds,
    scratch_patience,
    target_epochs,
    training_rate,
)
from modelbuilder.training.trials.tta import FlipAverage, flip_pays  # noqa: E402


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "shapes", classes=3, per_class=12, size=32)


class NearestMeanTrial:
    """A real (if simple) strategy: each label's mean feature vector; the nearest mean wins."""

    name = "nearest_mean"
    needs = frozenset({"features"})

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate:
        return TrialEstimate(weight=0.0, min_seconds=0.0, fixed_seconds=0.1)

    def run(self, ctx: TrialContext) -> TrialOutcome:
        train_f, val_f = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in ctx.split("features"))
        means = torch.stack([train_f[torch.from_numpy(ctx.y_train == c)].mean(0)
                             for c in range(ctx.num_classes)])
        head = nn.Linear(means.shape[1], ctx.num_classes)
        with torch.no_grad():  # -|x - m|^2 up to a per-image constant: 2 x.m - |m|^2
            head.weight.copy_(2 * means)
            head.bias.copy_(-(means ** 2).sum(1))
            probs = torch.softmax(head(val_f), 1).numpy()
        accuracy = float((probs.argmax(1) == ctx.y_val).mean())
        model = nn.Sequential(copy.deepcopy(ctx.backbone), head).eval()
        return TrialOutcome(self.name, "nearest_mean", ctx.plan.backbone, ctx.feature_spec, model, accuracy,
                            probs, 0.01)


@pytest.fixture
def nearest_mean() -> Iterator[NearestMeanTrial]:
    trial = NearestMeanTrial()
    register_trial(trial, before="ensemble")
    yield trial
    unregister_trial(trial.name)


def config(data: Path, budget: float = 8, **kwargs: Any) -> TrainingConfig:
    return TrainingConfig(data=str(data), architecture="test_tiny", time_budget=budget, **kwargs)


def test_a_custom_trial_runs_and_its_model_is_considered(data: Path, tmp_path: Path,
                                                          nearest_mean: NearestMeanTrial) -> None:
    reporter = RecordingReporter()
    result = run_training(config(data, strategies=("linear", "nearest_mean")), reporter, tmp_path / "a")
    assert [t for t, _ in reporter.of_kind("trial_started")] == ["linear", "nearest_mean"]
    custom = next(t for t in result.trials if t.name == "nearest_mean")
    assert custom.strategy == "nearest_mean" and 0 <= custom.val_accuracy <= 1
    assert result.plan is not None and result.plan["trials"][1]["status"] == "completed"
    alone = run_training(config(data, strategies=("nearest_mean",)), RecordingReporter(), tmp_path / "b")
    assert alone.strategy == "nearest_mean"  # the only model: exported, parity-checked, shipped
    engine = load_model(tmp_path / "b" / "MLModel.zip")
    evaluation = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    item = evaluation["validation_items"][0]
    assert engine.predict(item["path"]).prediction == item["predicted_label"]


class SlowPhase:
    """A trial that makes the (fake) clock jump, as a busy machine stretches a phase."""

    name = "slow_phase"
    needs: frozenset[str] = frozenset()

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate:
        return TrialEstimate(weight=0.0, min_seconds=0.0, fixed_seconds=0.5)

    def run(self, ctx: TrialContext) -> None:
        self.clock.offset += self.seconds
        return None


class FakeClock:
    """Time that stands still except when a phase says it took long (the test needs no real seconds)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return self.offset


class PlanSnapshots(RecordingReporter):
    """Keeps every published plan.json; asks to stop once ``stop_at`` started (the test has seen enough)."""

    def __init__(self, stop_at: str | None = None) -> None:
        super().__init__()
        self.plans: list[dict[str, Any]] = []
        self.stop_at = stop_at

    def should_stop(self) -> bool:
        return any(trial == self.stop_at for trial, _ in self.of_kind("trial_started"))

    def artifact(self, path: Path, name: str) -> None:
        super().artifact(path, name)
        if name == "plan.json":
            self.plans.append(json.loads(Path(path).read_text()))


def budgets(plan: dict[str, Any]) -> dict[str, tuple[str, float]]:
    return {t["name"]: (t["status"], t["budget_s"]) for t in plan["trials"]}


def test_an_overrunning_phase_shrinks_and_drops_the_later_trials(data: Path, tmp_path: Path) -> None:
    fake = FakeClock()
    # 30 s budget, 1 s reserve: 29 s to share until the phase takes 25 of them.
    register_trial(SlowPhase(fake, seconds=25.0), before="partial_finetune")  # type: ignore[arg-type]
    try:
        reporter = PlanSnapshots(stop_at="partial_finetune")
        result = run_training(config(data, 30), reporter, tmp_path / "out", clock=Clock(30, now=fake))
    finally:
        unregister_trial("slow_phase")
    before = next(budgets(p) for p in reporter.plans if budgets(p)["slow_phase"][0] == "planned")
    after = next(budgets(p) for p in reporter.plans if budgets(p)["slow_phase"][0] == "skipped")
    assert before["partial_finetune"][0] == before["scratch_cnn"][0] == "planned"
    assert before["partial_finetune"][1] > 15  # 60% of 29 s, next to the scratch CNN
    assert after["partial_finetune"][1] == pytest.approx(4.0)  # all that is left: 30 - 1 - 25
    assert after["scratch_cnn"][0] == "dropped"  # its share would be below a few epochs
    started = [t for t, _ in reporter.of_kind("trial_started")]
    assert started == ["linear", "slow_phase", "partial_finetune"]  # then the test stops
    assert result.canceled and result.plan is not None
    assert budgets(result.plan)["partial_finetune"] == ("canceled", pytest.approx(4.0))


def test_a_replay_reaches_the_same_validation_accuracy(tmp_path: Path) -> None:
    """The first run is bounded by time, the replay by the recorded steps and schedule: every trial's
    validation probabilities agree within float noise."""
    data = make_image_folder(tmp_path / "four", classes=4, per_class=15, size=32)
    # The loop's own test covers longer, time-cut schedules; the CNN replays its width and flip choice.
    strategies = ("linear", "partial_finetune", "scratch_cnn")
    # The run's clock stands still (a busy machine must not drop a trial here); each trial's loop still
    # stops at its budget in real seconds, so the recorded steps come from a time-cut run.
    first = run_training(config(data, 10, strategies=strategies), RecordingReporter(), tmp_path / "a",
                         checkpoint_dir=tmp_path / "ck-a", clock=Clock(10, now=FakeClock()))
    assert first.plan is not None
    recorded = {t["name"]: t for t in first.plan["trials"] if t["status"] == "completed"}
    assert set(strategies) <= set(recorded)
    assert recorded["partial_finetune"]["record"]["steps"] > 0
    assert recorded["scratch_cnn"]["record"]["width"] in WIDTHS
    again = run_training(config(data, 10, strategies=strategies, replay_plan=first.plan), RecordingReporter(),
                         tmp_path / "b", checkpoint_dir=tmp_path / "ck-b")
    assert again.plan is not None and again.plan["replay"]
    assert [t["name"] for t in again.plan["trials"]] == list(recorded)
    for trial in again.plan["trials"]:
        assert trial["record"] == recorded[trial["name"]]["record"]
        np.testing.assert_allclose(np.load(tmp_path / "ck-b" / f"{trial['name']}.probs.npy"),
                                   np.load(tmp_path / "ck-a" / f"{trial['name']}.probs.npy"), atol=1e-5)
    assert {t.name: t.val_accuracy for t in again.trials} == {t.name: t.val_accuracy for t in first.trials}
    assert again.accuracy == pytest.approx(first.accuracy, abs=1e-6)


def small_plan(num_train: int, budget: float, channels: int = 1, speed: float = 1.0) -> Plan:
    facts = DataFacts(num_train=num_train, num_val=num_train // 4, typical_side=28, channels=channels,
                      num_labels=10)
    plan = make_plan("efficientnet_lite0", facts, num_train + num_train // 4, budget, rate_scale=speed)
    plan.cores = 2
    return plan


def test_the_scratch_cnn_is_sized_from_the_time_it_gets_and_the_measured_speed() -> None:
    plan = small_plan(48_000, 600.0)
    widths = [choose_width(plan, seconds) for seconds in (60.0, 300.0, 3_000.0, 30_000.0)]
    assert widths == sorted(widths) and widths[0] == WIDTHS[0] and widths[-1] == WIDTHS[-1]
    chosen = choose_width(plan, 1_200.0)
    assert 10 * epoch_seconds(plan, chosen) <= 1_200.0  # it gets its ten passes over the data
    slow = dataclasses.replace(plan, speed=plan.speed / 3)  # a busy machine: a narrower network
    assert choose_width(slow, 1_200.0) < chosen
    assert training_rate(small_plan(48_000, 600.0, channels=3), chosen) < training_rate(plan, chosen)
    # Few images: it is sized for many more passes (enough optimizer steps), so it stays narrow.
    assert target_epochs(48_000) == 10 and target_epochs(1_600) == pytest.approx(80)
    few = small_plan(1_600, 180.0)
    assert 10 * epoch_seconds(few, WIDTHS[-1]) < 50.0  # ten epochs of the widest would fit, yet:
    assert choose_width(few, 50.0) == WIDTHS[0]


def test_the_partial_fine_tune_runs_only_when_it_buys_three_epochs_next_to_the_cnn() -> None:
    trial = PartialFinetuneTrial()
    many = small_plan(48_000, 600.0)
    many.feature_rate = 420.0  # measured at 96 px: one epoch of the tail costs ~460 s
    estimate = trial.estimate(many, 400.0)
    assert estimate is not None and estimate.min_seconds >= 3 * estimate.epoch_seconds
    budgets = allocate([("partial_finetune", estimate),
                        ("scratch_cnn", TrialEstimate(weight=1.0, min_seconds=15.0))], 400.0)
    assert budgets["partial_finetune"] is None and budgets["scratch_cnn"] == pytest.approx(400.0)
    few = small_plan(1_600, 180.0)
    few.feature_rate = 420.0
    kept = allocate([("partial_finetune", trial.estimate(few, 120.0)),  # type: ignore[list-item]
                     ("scratch_cnn", TrialEstimate(weight=1.0, min_seconds=15.0))], 120.0)
    assert kept["partial_finetune"] == pytest.approx(72.0)  # 60%: it gets 4.7 epochs
    photos = dataclasses.replace(many, scratch_pool=None)  # no CNN competes: any epoch beats none
    assert trial.estimate(photos, 400.0).min_seconds < 10  # type: ignore[union-attr]


def outcome(name: str, probs: np.ndarray, y: np.ndarray) -> TrialOutcome:
    spec = PreprocessSpec(resize_size=8, crop_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return TrialOutcome(name, name, "test", spec, nn.Identity(), float((probs.argmax(1) == y).mean()),
                        probs, 1.0)


def test_the_ensemble_weights_its_members_on_validation() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    truth = np.eye(2)[y]
    # A strong member (right on 90%, confident) and a weak one (right on 75%, more confident still):
    # an equal vote follows the weak one where it is wrong, more weight on the strong one does not.
    strong = np.where(rng.random(400)[:, None] < 0.9, 0.7 * truth + 0.15, 0.7 * (1 - truth) + 0.15)
    weak = np.where(rng.random(400)[:, None] < 0.75, 0.98 * truth + 0.01, 0.98 * (1 - truth) + 0.01)
    chosen = best_ensemble([outcome("strong", strong, y), outcome("weak", weak, y)], y, min_gain=-1.0)
    assert chosen is not None
    members, weights, accuracy, probs = chosen
    equal = float(((strong + weak).argmax(1) == y).mean())
    assert accuracy > equal + 3 / 400 and weights[0] > weights[1]
    assert [m.name for m in members] == ["strong", "weak"]
    torch.manual_seed(0)
    first, second = nn.Linear(3, 2), nn.Linear(3, 2)
    x = torch.randn(5, 3)
    expected = weights[0] * torch.softmax(first(x), 1) + weights[1] * torch.softmax(second(x), 1)
    assert torch.allclose(Ensemble([first, second], weights)(x).exp(), expected, atol=1e-6)


def test_when_every_trial_scores_100_percent_the_log_loss_decides() -> None:
    """A saturated validation split (crops of the same photos) cannot rank trials by accuracy: an
    ensemble that is as accurate and clearly better calibrated is kept; one that is not, is not."""
    y = np.array([0, 1, 2] * 20)
    truth = np.eye(3)[y]
    rng = np.random.default_rng(1)
    # Both right everywhere, each unsure on a different half: their average is surer than either.
    a = np.where(np.arange(60)[:, None] < 30, 0.4 * truth + 0.2, 0.98 * truth + 0.01)
    b = np.where(np.arange(60)[:, None] >= 30, 0.4 * truth + 0.2, 0.98 * truth + 0.01)
    chosen = best_ensemble([outcome("a", a, y), outcome("b", b, y)], y)
    assert chosen is not None and chosen[2] == 1.0 and log_loss(y, chosen[3]) < log_loss(y, a)
    # A copy of the same model gains nothing: no ensemble.
    noisy = np.clip(a + rng.normal(0, 1e-4, a.shape), 1e-6, None)
    noisy /= noisy.sum(1, keepdims=True)
    assert best_ensemble([outcome("a", a, y), outcome("a2", noisy, y)], y) is None
    assert validation_rank(y, a) < validation_rank(y, 0.98 * truth + 0.01)


def test_the_final_model_is_the_better_calibrated_of_trials_tied_on_accuracy(tmp_path: Path) -> None:
    y = np.array([0, 1] * 10)
    checkpoints = CheckpointDir(tmp_path / "ck")
    spec = {"resize_size": 8, "crop_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3}
    trials = []
    for name, sure in (("first", 0.6), ("surer", 0.95), ("wrong_but_sure", 0.99)):
        probs = np.eye(2)[y] * (2 * sure - 1) + (1 - sure)
        if name == "wrong_but_sure":
            probs[:2] = probs[:2, ::-1]
        accuracy = float((probs.argmax(1) == y).mean())
        trial = FinishedTrial(name, name, "test", accuracy, 1.0, spec, {}, f"{name}.onnx",
                              f"{name}.probs.npy")
        checkpoints.add(trial, probs, 1.0)
        trials.append(trial)
    assert max(trials, key=lambda t: _rank(t, checkpoints, y)).name == "surer"


def test_flip_averaging_is_kept_only_when_it_pays_and_exports(tmp_path: Path) -> None:
    y = np.array([0, 1, 0, 1] * 25)
    plain = np.eye(2)[y] * 0.6 + 0.2
    plain[:10] = plain[:10, ::-1]  # ten wrong, but barely
    flipped = np.eye(2)[y] * 0.9 + 0.05  # the mirror image is right with more confidence
    keep, probs, accuracy = flip_pays(plain, flipped, y, 0.9)
    assert keep and accuracy == 1.0 and np.allclose(probs, (plain + flipped) / 2)
    assert flip_pays(plain, plain, y, 0.9) == (False, plain, 0.9)
    torch.manual_seed(0)
    model = FlipAverage(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))).eval()
    sample = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    model(torch.from_numpy(sample))
    path = export_onnx(model, 8, tmp_path / "flip.onnx")
    check_parity(model, path, sample)


def test_the_grey_cnn_with_its_grid_head_exports_for_every_small_size(tmp_path: Path) -> None:
    for size in (28, 32, 12):
        torch.manual_seed(0)
        model = nn.Sequential(nn.AvgPool2d(2), ChannelMean(), compact_cnn(3, 16, in_channels=1, size=size))
        model.eval()
        sample = np.random.default_rng(size).standard_normal((2, 3, 2 * size, 2 * size)).astype(np.float32)
        assert model(torch.from_numpy(sample)).shape == (2, 3)
        check_parity(model, export_onnx(model, 2 * size, tmp_path / f"cnn{size}.onnx"), sample)


def test_the_scratch_cnn_on_a_handful_of_images_stops_when_its_score_stops_moving(data: Path) -> None:
    """Tiny data plans thousands of epochs: the CNN must not spend its whole share of a long budget on
    a validation score that stopped moving (a 60 s run here would otherwise take ~60 s)."""
    assert (scratch_patience(12.4, 400), scratch_patience(2, 400), scratch_patience(5000, 400)) == (
        14, 8, MAX_PATIENCE)
    # Few steps an epoch (1,600 images, batch 128) and 400 validation images: the wait is PATIENCE_STEPS
    # steps, not 30 epochs; with a handful of validation images it stays at 30 epochs.
    assert scratch_patience(60, 13, 400) == 61
    assert scratch_patience(500, 13, 400) == math.ceil(PATIENCE_STEPS / 13)
    assert scratch_patience(500, 1, 10) == MAX_PATIENCE
    reporter = RecordingReporter()
    started = time.monotonic()
    result = run_training(config(data, 60, strategies=("scratch_cnn",)), reporter, data.parent / "out")
    assert time.monotonic() - started < 40
    lines = [str(args[1]) for kind, args in reporter.events if kind == "log"]
    assert any("scratch_cnn: stopping early" in line for line in lines), lines[-5:]
    assert [t.name for t in result.trials] == ["scratch_cnn"]
