"""The trial registry, the plan as data and re-planning, without training (fast)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelbuilder.errors import InvalidParameterError
from modelbuilder.training.config import TrainingConfig
from modelbuilder.training.plan import (
    DataFacts,
    Plan,
    PlannedTrial,
    TrialEstimate,
    allocate,
    apply_estimates,
    make_plan,
)
from modelbuilder.training.registry import (
    check_strategies,
    known_trial_names,
    register_trial,
    unregister_trial,
)

BUILT_IN = ["linear", "midlevel_linear", "partial_finetune", "scratch_cnn", "ensemble"]


def test_unknown_strategy_is_refused_with_the_known_ones(tmp_path: object) -> None:
    with pytest.raises(InvalidParameterError) as info:
        TrainingConfig(data="images", strategies=("linear", "partial_finetunee"))
    message = str(info.value)
    assert "'partial_finetunee'" in message
    for name in BUILT_IN:
        assert name in message
    assert TrainingConfig(data="images", strategies=("scratch_cnn",)).strategies == ("scratch_cnn",)
    assert check_strategies([]) is None and check_strategies(None) is None


def test_the_registry_lists_trials_in_run_order_without_importing_torch() -> None:
    assert known_trial_names()[:5] == BUILT_IN
    code = ("import sys; from modelbuilder.training.registry import known_trial_names; "
            "from modelbuilder.training.config import TrainingConfig; "
            "TrainingConfig(data='x', strategies=('linear',)); "
            "print(','.join(known_trial_names()), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [",".join(BUILT_IN), "False"]


def test_register_before_places_a_trial_ahead_of_another() -> None:
    class Named:
        name = "custom_x"
        needs: frozenset[str] = frozenset()

    register_trial(Named(), before="ensemble")  # type: ignore[arg-type]
    try:
        names = known_trial_names()
        assert names.index("custom_x") == names.index("ensemble") - 1
        assert TrainingConfig(data="x", strategies=("custom_x",)).strategies == ("custom_x",)
    finally:
        unregister_trial("custom_x")
    assert "custom_x" not in known_trial_names()
    with pytest.raises(InvalidParameterError):
        register_trial("some.module:Thing", name="bad:name")


def facts(num_train: int = 48_000, side: int = 28) -> DataFacts:
    return DataFacts(num_train=num_train, num_val=12_000, typical_side=side, channels=1, num_labels=10)


def test_the_plan_comes_from_measured_facts_not_names() -> None:
    small = make_plan("efficientnet_lite0", facts(), 60_000, 600.0)
    assert small.feature_size <= 112 and small.scratch_pool == round(small.feature_size / 28)
    photos = make_plan("efficientnet_lite0", facts(2_000, side=300), 2_500, 600.0)
    assert photos.feature_size == 224 and photos.scratch_pool is None
    slow = make_plan("efficientnet_lite0", facts(), 60_000, 600.0, rate_scale=0.3)
    assert slow.feature_size < small.feature_size  # a slow machine gets a cheaper feature pass


def test_allocation_shares_by_weight_and_drops_the_last_trial_that_does_not_fit() -> None:
    estimates = [("fixed", TrialEstimate(weight=0, min_seconds=0, fixed_seconds=10)),
                 ("a", TrialEstimate(weight=1.5, min_seconds=3)),
                 ("b", TrialEstimate(weight=1.0, min_seconds=15))]
    budgets = allocate(estimates, 110)
    assert budgets == {"fixed": 10, "a": pytest.approx(60), "b": pytest.approx(40)}
    tight = allocate(estimates, 40)  # b would get 12 s < 15 s: dropped, a gets everything
    assert tight["b"] is None and tight["a"] == pytest.approx(30)
    assert allocate(estimates, 5)["a"] is None


def test_replanning_with_less_time_shrinks_and_drops_later_trials() -> None:
    plan = make_plan("efficientnet_lite0", facts(4_000), 5_000, 300.0)
    plan.trials = [PlannedTrial("partial_finetune"), PlannedTrial("scratch_cnn"), PlannedTrial("gpu_only")]
    estimates: list[tuple[str, TrialEstimate | None]] = [
        ("partial_finetune", TrialEstimate(weight=1.5, min_seconds=3, epoch_seconds=10, batch_size=64)),
        ("scratch_cnn", TrialEstimate(weight=1.0, min_seconds=15, epoch_seconds=2, batch_size=128)),
        ("gpu_only", None),  # does not apply here
    ]
    apply_estimates(plan, estimates, 200)
    first = {t.name: t.budget_s for t in plan.trials}
    assert plan.trials[0].epochs == pytest.approx(first["partial_finetune"] / 10)
    apply_estimates(plan, estimates, 30)  # the machine got slower: 30 s left instead of 200
    assert plan.trials[0].budget_s < first["partial_finetune"]
    assert plan.trials[1].status == "dropped" and plan.revision == 2
    assert plan.trials[2].status == "not_applicable"
    described = plan.describe()
    assert "scratch_cnn (dropped: no time)" in described and "gpu_only (does not apply)" in described


def test_a_plan_survives_json_and_garbage_is_refused() -> None:
    import json

    plan = make_plan("test_tiny", facts(30, side=32), 36, 20.0)
    plan.trials = [PlannedTrial("linear", status="completed", record={"decays_tried": 2})]
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    with pytest.raises(InvalidParameterError, match="replay_plan") as info:
        TrainingConfig(data="x", replay_plan={"format_version": 99})
    assert "modelbuilder train --replay" in (info.value.hint or "")
