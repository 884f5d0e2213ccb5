"""``ensemble``: the average of earlier trials' probabilities, when that beats the best single trial."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch
import torch.nn as nn

from ..plan import Plan, TrialEstimate
from .base import TrialContext, TrialOutcome


class Ensemble(nn.Module):
    """Average of the members' softmax probabilities; outputs log-probabilities (valid logits)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).mean(0)
        return torch.log(probs.clamp_min(1e-7))


def best_ensemble(outcomes: list[TrialOutcome], y_val: np.ndarray,
                  min_gain: float = 0.002) -> tuple[list[TrialOutcome], float, np.ndarray] | None:
    """The subset (2+ members, same input) whose averaged probabilities beat the best single trial."""
    usable = [o for o in outcomes if not o.canceled and len(o.val_probabilities)]
    if len(usable) < 2 or len(y_val) == 0:
        return None
    best_single = max(o.val_accuracy for o in usable)
    best: tuple[list[TrialOutcome], float, np.ndarray] | None = None
    for size in range(2, len(usable) + 1):
        for combo in combinations(usable, size):
            if len({o.preprocessing for o in combo}) != 1:
                continue
            probs = np.mean([o.val_probabilities for o in combo], axis=0)
            acc = float((probs.argmax(1) == y_val).mean())
            if acc >= best_single + min_gain and (best is None or acc > best[1]):
                best = (list(combo), acc, probs)
    return best


class EnsembleTrial:
    name = "ensemble"
    needs: frozenset[str] = frozenset()
    report_only_outcome = True  # no child run when no combination beats the best single trial

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate:
        return TrialEstimate(weight=0.0, min_seconds=0.0, image_size=plan.feature_size)

    def run(self, ctx: TrialContext) -> TrialOutcome | None:
        combo = best_ensemble(list(ctx.outcomes.values()), ctx.y_val)
        if combo is None:
            return None
        members, accuracy, probs = combo
        names = [m.name for m in members]
        ctx.reporter.log(f"ensemble of {', '.join(names)}: val_accuracy={accuracy:.4f}")
        return TrialOutcome(self.name, "ensemble(" + "+".join(m.strategy for m in members) + ")",
                            ctx.plan.backbone, ctx.feature_spec, Ensemble([m.model for m in members]).eval(),
                            accuracy, probs, 0.0, params={"members": names}, record={"members": names})
