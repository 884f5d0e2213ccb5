"""``linear``: a linear head on frozen backbone features (ML.NET's approach; seconds)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import get_backbone_spec
from ..plan import Plan, TrialEstimate, core_factor
from .base import TrialContext, TrialOutcome

#: L2 strengths tried, the usual winner first: a slow machine may only afford one.
DECAYS = (3e-3, 3e-4, 3e-2)
#: Share of the whole budget the strength search may use before it settles for the best so far.
TIME_SHARE = 0.15
#: Multiply-adds per second of L-BFGS on features on the 2-core reference machine (the plan's estimate).
_LBFGS_RATE = 2e10


class Standardize(nn.Module):
    """(x - mean) / std as a module, so the exported graph carries the feature scaling."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def folded_linear(standardize: Standardize, linear: nn.Linear) -> nn.Linear:
    """Fold the standardisation into the linear layer: one MatMul + Add in the exported model."""
    folded = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        weight = linear.weight / standardize.std
        folded.weight.copy_(weight)
        folded.bias.copy_(linear.bias - (weight * standardize.mean).sum(dim=1))
    return folded


def standardized_logits(linear: nn.Linear, standardize: Standardize, x: torch.Tensor) -> torch.Tensor:
    """``linear(standardize(x))`` without a standardized copy of ``x``: the scaling goes into the
    weights instead (``x`` is the feature cache's memory-mapped rows; a copy would hold all of them in
    this process's memory)."""
    weight = linear.weight / standardize.std
    return F.linear(x, weight, linear.bias - weight @ standardize.mean)


def _fit_lbfgs(x: torch.Tensor, y: torch.Tensor, num_classes: int, decay: float, standardize: Standardize,
               max_iter: int = 150) -> nn.Linear:
    linear = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = standardized_logits(linear, standardize, x)
        loss = F.cross_entropy(logits, y) + decay * linear.weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return linear


@dataclass
class LinearHead:
    folded: nn.Linear  # standardisation folded in: what ships
    unfolded: nn.Sequential  # Standardize + Linear: weights of a sane scale to train further
    val_accuracy: float
    val_probabilities: np.ndarray
    weight_decay: float
    decays_tried: int


def train_linear_head(train_f: np.ndarray, train_y: np.ndarray, val_f: np.ndarray, val_y: np.ndarray,
                      num_classes: int, seed: int = 0, selection_rows: int = 8000,
                      time_limit: float | None = None, decays_to_try: int | None = None) -> LinearHead:
    """Multinomial logistic regression with L-BFGS; the L2 strength is chosen on the validation split.

    With many images the strength is chosen on a random subset of ``selection_rows`` training rows (the
    choice is stable; the cost is not), then the head is refitted on all rows. The search stops after a
    third of ``time_limit`` once one strength is fitted; ``decays_to_try`` (a replay) fixes how many.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(train_f, dtype=np.float32))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    standardize = Standardize(mean, std)
    vx = torch.from_numpy(np.asarray(val_f, dtype=np.float32))
    y, vy = torch.from_numpy(train_y).long(), torch.from_numpy(val_y).long()
    subset = torch.randperm(len(x), generator=generator)[:selection_rows] if len(x) > selection_rows \
        else None

    def score(linear: nn.Linear) -> tuple[float, float, np.ndarray]:
        with torch.no_grad():
            logits = standardized_logits(linear, standardize, vx)
            return (float((logits.argmax(1) == vy).float().mean()), float(F.cross_entropy(logits, vy)),
                    torch.softmax(logits, 1).numpy())

    best: tuple[float, float, float, nn.Linear, np.ndarray] | None = None
    started = time.monotonic()
    tried = 0
    for decay in DECAYS:
        if decays_to_try is not None:
            if tried >= decays_to_try:
                break
        elif best is not None and time_limit is not None and time.monotonic() - started > time_limit / 3:
            break
        fit_x, fit_y = (x, y) if subset is None else (x[subset], y[subset])
        linear = _fit_lbfgs(fit_x, fit_y, num_classes, decay, standardize)
        tried += 1
        acc, loss, probs = score(linear)
        if best is None or (acc, -loss) > (best[0], -best[1]):
            best = (acc, loss, decay, linear, probs)
    assert best is not None
    acc, _, decay, linear, probs = best
    if subset is not None:
        linear = _fit_lbfgs(x, y, num_classes, decay * selection_rows / len(x), standardize)
        acc, _, probs = score(linear)
    return LinearHead(folded_linear(standardize, linear), nn.Sequential(standardize, linear), acc, probs,
                      decay, tried)


def head_seconds(plan: Plan, rows: int) -> float:
    """Expected seconds of L-BFGS over ``rows`` feature rows (every strength tried counted), at most the
    search's share of the budget."""
    work = 150 * 2 * rows * get_backbone_spec(plan.backbone).feature_dim * max(2, plan.data.num_labels)
    return min(TIME_SHARE * plan.budget_s, work / (_LBFGS_RATE * core_factor(plan.cores) * plan.speed))


def fit_trial_head(ctx: TrialContext, trial: str, train_f: np.ndarray, val_f: np.ndarray) -> LinearHead:
    """``train_linear_head`` for a trial: the strengths a replay recorded, else as many as its share of
    the budget allows; the validation accuracy is reported as the trial's metric."""
    replayed = None if ctx.replay is None else int(ctx.replay["decays_tried"])
    head = train_linear_head(train_f, ctx.y_train, val_f, ctx.y_val, ctx.num_classes, ctx.seed,
                             time_limit=TIME_SHARE * ctx.config.time_budget, decays_to_try=replayed)
    ctx.reporter.metric("val_accuracy", head.val_accuracy, 1, trial)
    return head


class LinearTrial:
    name = "linear"
    needs = frozenset({"features"})

    def estimate(self, plan: Plan, time_left: float) -> TrialEstimate:
        n = plan.num_train
        rows = min(n, 8000) * len(DECAYS) + (n if n > 8000 else 0)
        return TrialEstimate(weight=0.0, min_seconds=0.0, fixed_seconds=head_seconds(plan, rows),
                             image_size=plan.feature_size)

    def run(self, ctx: TrialContext) -> TrialOutcome:
        start = time.monotonic()
        train_f, val_f = ctx.split("features")
        head = fit_trial_head(ctx, self.name, train_f, val_f)
        model = nn.Sequential(copy.deepcopy(ctx.backbone), head.folded).eval()
        params = {"weight_decay": head.weight_decay, "image_size": ctx.feature_spec.crop_size}
        return TrialOutcome(self.name, "linear", ctx.plan.backbone, ctx.feature_spec, model,
                            head.val_accuracy, head.val_probabilities, time.monotonic() - start,
                            params=params, head=head.unfolded, record={"decays_tried": head.decays_tried})
