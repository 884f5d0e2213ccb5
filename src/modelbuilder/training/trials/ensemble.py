"""``ensemble``: a weighted average of earlier trials' probabilities, when that beats the best single
trial on the validation split, or when the split cannot tell the best trials apart (``saturated_tie``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..evaluation import TIE_PARAM, log_loss
from ..plan import Plan, TrialEstimate
from .base import TrialContext, TrialOutcome

#: Weights tried for each member (then normalised). Members differ a lot in accuracy (a linear head at
#: 88% next to a CNN at 92%): an equal vote lets the weaker one undo the stronger one's right answers.
WEIGHT_STEPS = (1.0, 2.0, 3.0)
#: Unequal weights are kept only when they beat equal weights by at least this many validation images
#: (choosing among weights on the same images that score them favours the chosen ones a little).
MIN_IMAGES_FOR_WEIGHTS = 3
#: An ensemble as accurate as the best single trial is kept only when it lowers the validation log loss
#: by at least this share (it costs a second model at prediction time).
MIN_LOSS_GAIN = 0.1
#: Two trials whose validation log-probabilities differ by less than this on average are copies of one
#: model (a fine-tune that never beat its warm start): averaging them changes nothing.
SAME_MODEL_LOG_GAP = 0.05


class Ensemble(nn.Module):
    """Weighted average of the members' softmax probabilities; outputs log-probabilities (valid logits)."""

    weights: torch.Tensor

    def __init__(self, members: list[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        values = torch.tensor(list(weights) if weights is not None else [1.0] * len(members))
        self.register_buffer("weights", values / values.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = sum(w * torch.softmax(m(x), dim=1) for w, m in zip(self.weights, self.members, strict=True))
        assert isinstance(probs, torch.Tensor)
        return torch.log(probs.clamp_min(1e-7))


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(1) == y).mean())


def _best_weights(members: Sequence[TrialOutcome],
                  y: np.ndarray) -> tuple[tuple[float, ...], float, np.ndarray]:
    """Equal weights, or the tried weights that score best on validation by a clear margin."""
    stacked = np.stack([o.val_probabilities for o in members])
    equal = tuple(1.0 / len(members) for _ in members)
    best_probs = np.tensordot(equal, stacked, axes=1)
    best = (equal, _accuracy(best_probs, y), best_probs)
    margin = MIN_IMAGES_FOR_WEIGHTS / len(y)
    for raw in itertools.product(WEIGHT_STEPS, repeat=len(members)):
        if len(set(raw)) == 1:
            continue
        weights = tuple(w / sum(raw) for w in raw)
        probs = np.tensordot(weights, stacked, axes=1)
        accuracy = _accuracy(probs, y)
        if accuracy > best[1] + (margin if best[0] == equal else 0.0):
            best = (weights, accuracy, probs)
    return best


def distinct_models(outcomes: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    """``outcomes`` without the later copies of one model (near-identical validation probabilities)."""
    kept: list[TrialOutcome] = []
    for outcome in outcomes:
        logs = np.log(np.clip(outcome.val_probabilities, 1e-7, 1.0))
        if all(float(np.mean(np.abs(logs - np.log(np.clip(k.val_probabilities, 1e-7, 1.0)))))
               >= SAME_MODEL_LOG_GAP for k in kept):
            kept.append(outcome)
    return kept


def saturated_tie(outcomes: list[TrialOutcome], y_val: np.ndarray
                  ) -> tuple[list[TrialOutcome], tuple[float, ...], float, np.ndarray] | None:
    """The equal-weight average of the distinct trials that get every validation image right, when
    there are two or more with the same input: (members, weights, accuracy, probabilities), or None.

    Such a split (crops of the same few photos) cannot rank them: accuracy ties at 100%, and their log
    losses differ by how confident each model is on easy images, which says nothing about images unlike
    them. Equal weights are the choice that needs no ranking, and the average of two different views
    is never worse than the worse one under the log loss and usually better than either: on the photos
    benchmark (test images from other parts of each photo) the head on final features scored 92.95% on
    average over 3 splits, the mid-level head 94.15%, their average 93.9%, where the log loss kept the
    first."""
    usable = [o for o in outcomes if not o.canceled and len(o.val_probabilities) == len(y_val)]
    if len(y_val) == 0:
        return None
    perfect = [o for o in usable if _accuracy(o.val_probabilities, y_val) == 1.0]
    groups: dict[object, list[TrialOutcome]] = {}
    for outcome in perfect:
        groups.setdefault(outcome.preprocessing, []).append(outcome)
    members = max((distinct_models(g) for g in groups.values()), key=len, default=[])
    if len(members) < 2:
        return None
    weights = tuple(1.0 / len(members) for _ in members)
    probs = np.tensordot(weights, np.stack([m.val_probabilities for m in members]), axes=1)
    return members, weights, _accuracy(probs, y_val), probs


def best_ensemble(outcomes: list[TrialOutcome], y_val: np.ndarray, min_gain: float = 0.002
                  ) -> tuple[list[TrialOutcome], tuple[float, ...], float, np.ndarray] | None:
    """The subset (2+ members, same input) and weights whose averaged probabilities beat the best single
    trial: (members, weights, validation accuracy, probabilities), or None."""
    usable = [o for o in outcomes if not o.canceled and len(o.val_probabilities)]
    if len(usable) < 2 or len(y_val) == 0:
        return None
    best_single = max(o.val_accuracy for o in usable)
    single_loss = min(log_loss(y_val, o.val_probabilities) for o in usable if o.val_accuracy == best_single)
    best: tuple[list[TrialOutcome], tuple[float, ...], float, np.ndarray] | None = None
    best_rank = (-1.0, -math.inf)
    for size in range(2, len(usable) + 1):
        for combo in itertools.combinations(usable, size):
            if len({o.preprocessing for o in combo}) != 1:
                continue
            weights, acc, probs = _best_weights(combo, y_val)
            loss = log_loss(y_val, probs)
            # Better by accuracy, or (when validation cannot tell them apart by accuracy, e.g. every
            # trial at 100%) as accurate with a clearly lower log loss.
            gains = acc >= best_single + min_gain or (
                acc >= best_single and loss <= single_loss * (1 - MIN_LOSS_GAIN))
            if gains and (acc, -loss) > best_rank:
                best, best_rank = (list(combo), weights, acc, probs), (acc, -loss)
    return best


class EnsembleTrial:
    name = "ensemble"
    needs: frozenset[str] = frozenset()
    report_only_outcome = True  # no child run when no combination beats the best single trial

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate:
        return TrialEstimate(weight=0.0, min_seconds=0.0, image_size=plan.feature_size)

    def run(self, ctx: TrialContext) -> TrialOutcome | None:
        outcomes = list(ctx.outcomes.values())
        tie = saturated_tie(outcomes, ctx.y_val)
        combo = tie or best_ensemble(outcomes, ctx.y_val)
        if combo is None:
            return None
        members, weights, accuracy, probs = combo
        names = [m.name for m in members]
        shown = ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights, strict=True))
        why = (" (every member scores 100% on the validation split, which cannot rank them: equal weights)"
               if tie else "")
        ctx.reporter.log(f"ensemble of {shown}: val_accuracy={accuracy:.4f}{why}")
        rounded = [round(w, 4) for w in weights]
        params: dict[str, object] = {"members": names, "weights": rounded}
        if tie:
            params[TIE_PARAM] = True
        return TrialOutcome(self.name, "ensemble(" + "+".join(m.strategy for m in members) + ")",
                            ctx.plan.backbone, ctx.feature_spec,
                            Ensemble([m.model for m in members], weights).eval(), accuracy, probs, 0.0,
                            params=params, record={"members": names, "weights": rounded})
