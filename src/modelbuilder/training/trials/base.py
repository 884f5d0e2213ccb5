"""What every trial gets (``TrialContext``) and gives back (``TrialOutcome``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.nn as nn

from ...pipeline.preprocess import PreprocessSpec
from ..config import TrainingConfig
from ..devices import DeviceStrategy
from ..loop import LoopConfig, LoopResult
from ..plan import Plan, PlannedTrial
from ..reporter import Reporter


@dataclass
class TrialOutcome:
    """A trained model (image in, logits out) and how it scored on the validation split.

    ``record`` is what a replay of this trial needs (steps, schedule horizons, choices made under the
    clock); the trainer stores it in the executed plan.
    """

    name: str
    strategy: str
    backbone: str
    preprocessing: PreprocessSpec
    model: nn.Module
    val_accuracy: float
    val_probabilities: np.ndarray
    seconds: float
    canceled: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    head: nn.Module | None = None  # linear trial: standardize + linear, unfolded (to warm-start others)
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialContext:
    """Everything a trial may use. Arrays (memory-mapped from the feature cache) hold training rows
    first, then validation rows.

    Attributes:
        planned: this trial's entry of the plan (its budget, batch size, image size).
        replay: the recorded ``record`` of the trial when the run replays a plan, else None.
        outcomes: the trials finished earlier in this process, by name.
        backbone / stem / tail: the pretrained feature extractor and its split for partial fine-tuning.
        time_left: seconds the search may still use (the trainer's clock, with its export reserve).
    """

    config: TrainingConfig
    reporter: Reporter
    plan: Plan
    planned: PlannedTrial
    labels: list[str]
    arrays: dict[str, np.ndarray]
    num_train: int
    y_train: np.ndarray
    y_val: np.ndarray
    backbone: nn.Module
    stem: nn.Module
    tail: nn.Module
    feature_spec: PreprocessSpec
    outcomes: dict[str, TrialOutcome]
    strategy: DeviceStrategy
    time_left: Callable[[], float]
    replay: dict[str, Any] | None = None

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def split(self, array: str) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, validation rows) of a cached array: views of the feature cache's
        memory-mapped file, not copies. ``torch.from_numpy`` takes them as they are; index a batch of
        rows to copy that batch (a whole-array ``np.concatenate``, fancy index or ``.float()`` would put
        every row in this process's memory)."""
        values = self.arrays[array]
        return values[:self.num_train], values[self.num_train:]

    def loop_config(self, **settings: Any) -> LoopConfig:
        """The loop settings for this trial: its budget and expected steps, or a replay's steps and
        schedule; ``settings`` are the trial's own (lr, batch size, ...)."""
        name = self.planned.name
        if self.replay is not None:
            horizons = tuple((int(s), int(h)) for s, h in self.replay.get("horizons", []))
            return LoopConfig(name, max_steps=int(self.replay["steps"]), horizons=horizons or None,
                              seed=self.seed, **settings)
        batch = int(settings.get("batch_size", 64))
        expected = None
        if self.planned.epochs:
            expected = max(1, int(self.planned.epochs * math.ceil(self.num_train / batch)))
        return LoopConfig(name, budget_s=self.planned.budget_s, expected_steps=expected, seed=self.seed,
                          **settings)


def loop_record(result: LoopResult) -> dict[str, Any]:
    """What a replay of a loop-trained trial needs."""
    return {"steps": result.steps, "epochs": result.epochs,
            "horizons": [[int(s), int(h)] for s, h in result.horizons]}
