"""The search end to end with the tiny test backbone: a custom trial, re-planning, replay, devices."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from factories import make_image_folder  # noqa: E402
from modelbuilder.pipeline import load_model  # noqa: E402
from modelbuilder.training.config import TrainingConfig  # noqa: E402
from modelbuilder.training.plan import Plan, TrialEstimate  # noqa: E402
from modelbuilder.training.registry import register_trial, unregister_trial  # noqa: E402
from modelbuilder.training.reporter import RecordingReporter  # noqa: E402
from modelbuilder.training.trainer import Clock, run_training  # noqa: E402
from modelbuilder.training.trials.base import TrialContext, TrialOutcome  # noqa: E402


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
    assert started == ["linear", "slow_phase", "partial_finetune"]  # then the test stops the run
    assert result.canceled and result.plan is not None
    assert budgets(result.plan)["partial_finetune"] == ("canceled", pytest.approx(4.0))


def test_a_replay_reaches_the_same_validation_accuracy(tmp_path: Path) -> None:
    """The first run is bounded by time, the replay by the recorded steps and schedule: every trial's
    validation probabilities agree within float noise."""
    data = make_image_folder(tmp_path / "four", classes=4, per_class=15, size=32)
    strategies = ("linear", "partial_finetune")  # the loop's own test covers longer, time-cut schedules
    first = run_training(config(data, 10, strategies=strategies), RecordingReporter(), tmp_path / "a",
                         checkpoint_dir=tmp_path / "ck-a")
    assert first.plan is not None
    recorded = {t["name"]: t for t in first.plan["trials"] if t["status"] == "completed"}
    assert {"linear", "partial_finetune"} <= set(recorded)
    assert recorded["partial_finetune"]["record"]["steps"] > 0
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
