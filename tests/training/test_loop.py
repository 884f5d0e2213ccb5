"""The training loop: time-bounded runs replayed step for step, and the device strategies."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import numpy as np  # noqa: E402

from modelbuilder.errors import TrainingError  # noqa: E402
from modelbuilder.training.devices import CPUStrategy, DataParallelStrategy, default_strategy  # noqa: E402
from modelbuilder.training.loop import LoopConfig, LoopData, Schedule, fit_classifier  # noqa: E402
from modelbuilder.training.reporter import RecordingReporter  # noqa: E402


def small_model() -> Any:  # an nn.Module (torch is imported only when installed)
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 4))


def data() -> LoopData:
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (240,), generator=generator)
    x = torch.randn(240, 3, 12, 12, generator=generator) + y.view(-1, 1, 1, 1) * 0.3  # learnable, not easy
    return LoopData(x[:192], y[:192], x[192:], y[192:])


def test_a_time_bounded_run_is_replayed_exactly_from_its_steps_and_schedule() -> None:
    budget = 1.0
    while True:  # a busy machine may need more than a second for the horizon to be re-estimated
        timed = fit_classifier(small_model(), data(), LoopConfig("t", lr=3e-3, budget_s=budget, batch_size=8,
                                                                 patience=10_000), RecordingReporter())
        if len(timed.horizons) > 1 or budget >= 16:
            break
        budget *= 2
    assert len(timed.horizons) > 1  # the horizon was re-estimated on the way
    replay = fit_classifier(small_model(), data(), LoopConfig("t", lr=3e-3, max_steps=timed.steps,
                                                              horizons=tuple(timed.horizons), batch_size=8,
                                                              patience=10_000), RecordingReporter())
    assert (replay.steps, replay.epochs) == (timed.steps, timed.epochs)
    assert replay.val_accuracy == timed.val_accuracy
    np.testing.assert_allclose(replay.val_probabilities, timed.val_probabilities, atol=1e-5)


def test_the_schedule_warms_up_then_decays_over_the_horizon() -> None:
    schedule = Schedule(horizon=100, warmup=0.1)
    assert schedule.factor(0) == pytest.approx(0.01) and schedule.factor(5) == pytest.approx(0.5)
    assert schedule.factor(10) == pytest.approx(1.0, abs=0.03) and schedule.factor(100) == pytest.approx(0.01)
    schedule.update(8, elapsed=8.0, budget=20.0)  # 1 s a step, 12 s left: 20 steps in all
    assert schedule.horizon(8) == 20 and schedule.horizon(7) == 100
    replayed = Schedule(horizon=1, warmup=0.1, recorded=((0, 100), (8, 20)))
    replayed.update(9, elapsed=1.0, budget=50.0)  # a replay never re-estimates
    assert [replayed.factor(s) for s in range(20)] == [schedule.factor(s) for s in range(20)]


def test_cpu_is_the_default_here_and_data_parallel_needs_a_process_group() -> None:
    if not torch.cuda.is_available():
        assert isinstance(default_strategy(), CPUStrategy)
    with pytest.raises(TrainingError, match="process group"):
        DataParallelStrategy(CPUStrategy())


def test_data_parallel_over_one_worker_trains_like_the_loop_expects() -> None:
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        strategy = DataParallelStrategy(CPUStrategy())
        result = fit_classifier(small_model(), data(), LoopConfig("t", lr=3e-3, max_steps=12, batch_size=16),
                                RecordingReporter(), strategy)
    finally:
        dist.destroy_process_group()
    assert result.steps == 12 and 0 <= result.val_accuracy <= 1
    assert not any(key.startswith("module.") for key in result.best_state)  # the unwrapped model's state


def test_data_parallel_shards_are_equal_and_disjoint() -> None:
    order = torch.randperm(11)
    shards = []
    for rank in range(3):
        strategy = object.__new__(DataParallelStrategy)  # the sharding rule, without a process group
        strategy.rank, strategy.world_size = rank, 3
        shards.append(strategy.shard(order))
    assert [len(s) for s in shards] == [3, 3, 3]  # equal: every worker takes the same batches
    assert len(set(torch.cat(shards).tolist())) == 9


def test_data_parallel_splits_the_planned_batch_so_an_epoch_takes_the_same_steps() -> None:
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")

    def epoch_batches(strategy: CPUStrategy | DataParallelStrategy) -> tuple[list[int], int]:
        sizes: list[int] = []

        def record(xb: Any) -> Any:  # augment sees the training batches only
            sizes.append(len(xb))
            return xb

        loop_data = data()
        loop_data.augment = record
        config = LoopConfig("t", lr=3e-3, max_steps=12, batch_size=32, patience=1_000)
        reporter = RecordingReporter()
        fit_classifier(small_model(), loop_data, config, reporter, strategy)
        first_epoch_steps = reporter.of_kind("progress")[0][1]
        return sizes[:first_epoch_steps], first_epoch_steps

    one_sizes, one_steps = epoch_batches(CPUStrategy())
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        strategy = DataParallelStrategy(CPUStrategy())
        strategy.world_size = 2  # rank 0 of two: its shard and batch, reductions over the one real process
        two_sizes, two_steps = epoch_batches(strategy)
    finally:
        dist.destroy_process_group()
    assert one_sizes == [32] * 6 and two_sizes == [16] * 6  # 192 samples: 96 a rank, in halved batches
    assert two_steps == one_steps == 6
