"""One training loop used by every trial that trains with gradients.

The learning rate follows a warm-up and a cosine curve over the *expected number of steps* (the
horizon). In a time-budgeted run the horizon is re-estimated from the measured step rate as the loop
goes (shared, noisy machines change speed mid-run), so the decay still ends when the budget ends; every
horizon change is recorded with the step it took effect at. A replay gives the recorded horizons and
step count instead of a budget, and so follows exactly the same schedule, independent of wall time.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .devices import DeviceStrategy, default_strategy
from .reporter import Reporter

Batch = Callable[[torch.Tensor], torch.Tensor]


def as_float(batch: torch.Tensor) -> torch.Tensor:
    return batch.float()


@dataclass(frozen=True)
class LoopConfig:
    """How one trial trains.

    Attributes:
        trial: the trial's name (metrics and log lines are reported under it).
        lr: peak learning rate; ``lr_scales`` give parts of the model their own factor of it (pretrained
            layers move slower than a new head).
        budget_s: wall-clock bound (time-budgeted runs); ``max_steps``: step bound (replays). At least
            one must be finite.
        expected_steps: the plan's guess of the steps that fit the budget (the first horizon).
        horizons: a replay's recorded ``(from_step, horizon)`` pairs; the horizon is then never
            re-estimated.
        freeze_batchnorm: keep BatchNorm layers in eval mode (their pretrained statistics), so that a
            warm-started head sees the same features in training as in evaluation from the first step.
    """

    trial: str
    lr: float
    budget_s: float = math.inf
    max_steps: int | None = None
    expected_steps: int | None = None
    horizons: tuple[tuple[int, int], ...] | None = None
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 6
    label_smoothing: float = 0.1
    seed: int = 0
    freeze_batchnorm: bool = False
    lr_scales: tuple[tuple[nn.Module, float], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if math.isinf(self.budget_s) and self.max_steps is None:
            raise ValueError("LoopConfig needs a finite budget_s or max_steps")


@dataclass
class LoopData:
    """Stored training and validation tensors; ``to_input`` turns a stored batch (uint8 pixels, float16
    activations) into the model's input and ``augment`` (optional) changes training batches after it."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    to_input: Batch = as_float
    augment: Batch | None = None


@dataclass
class LoopResult:
    best_state: dict[str, torch.Tensor]
    val_accuracy: float
    val_probabilities: np.ndarray
    epochs: int
    seconds: float
    canceled: bool
    stopped_early: bool
    steps: int = 0
    horizons: list[tuple[int, int]] = field(default_factory=list)


class Schedule:
    """Learning-rate factor of a step: linear warm-up, then cosine to 1% over the horizon."""

    def __init__(self, horizon: int, warmup: float, recorded: tuple[tuple[int, int], ...] | None = None):
        self.warmup = warmup
        self.fixed = recorded is not None
        self.horizons: list[tuple[int, int]] = list(recorded) if recorded else [(0, max(1, horizon))]
        self._next_update = 8

    def horizon(self, step: int) -> int:
        return next(h for s, h in reversed(self.horizons) if s <= step)

    def factor(self, step: int) -> float:
        progress = min(1.0, step / self.horizon(step))
        if progress < self.warmup:
            return max(progress / self.warmup, 0.01)
        return max(0.5 * (1 + math.cos(math.pi * progress)), 0.01)

    def update(self, step: int, elapsed: float, budget: float) -> None:
        """Re-estimate the horizon from the measured seconds per step (never in a replay)."""
        if self.fixed or step < self._next_update or math.isinf(budget):
            return
        per_step = elapsed / step
        horizon = max(step + 1, step + int((budget - elapsed) / max(per_step, 1e-9)))
        if horizon != self.horizons[-1][1]:
            self.horizons.append((step, horizon))
        self._next_update = step + max(8, min(step, horizon // 20))


@torch.no_grad()
def predict_probabilities(model: nn.Module, x: torch.Tensor, to_input: Batch, batch_size: int = 256,
                          strategy: DeviceStrategy | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and logits of ``model`` over ``x`` (eval mode)."""
    device = next(model.parameters()).device
    model.eval()
    logits = []
    autocast = strategy.autocast if strategy is not None else _no_autocast
    for start in range(0, len(x), batch_size):
        batch = to_input(x[start:start + batch_size].to(device))
        with autocast():
            logits.append(model(batch).float().cpu())
    out = torch.cat(logits) if logits else torch.zeros(0)
    return torch.softmax(out, dim=1).numpy(), out.numpy()


def _no_autocast() -> torch.autocast:
    return torch.autocast(device_type="cpu", enabled=False)


def _optimizer(model: nn.Module, config: LoopConfig) -> torch.optim.Optimizer:
    groups: list[dict[str, object]] = []
    assigned: set[int] = set()
    for part, scale in config.lr_scales:
        params = [p for p in part.parameters() if p.requires_grad and id(p) not in assigned]
        assigned.update(id(p) for p in params)
        groups.append({"params": params, "lr_scale": scale})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in assigned]
    groups.append({"params": rest, "lr_scale": 1.0})
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr,
                             weight_decay=config.weight_decay)


def _train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _accuracy(probs: np.ndarray, y: torch.Tensor) -> float:
    return float((probs.argmax(1) == y.numpy()).mean()) if len(probs) else 0.0


def fit_classifier(model: nn.Module, data: LoopData, config: LoopConfig, reporter: Reporter,
                   strategy: DeviceStrategy | None = None) -> LoopResult:
    """Train ``model`` until the budget or step bound ends, or patience runs out; keep the best epoch.

    The starting point is scored too: a warm-started model (partial fine-tuning begins at the linear
    head's accuracy) is kept as it is if no epoch beats it.
    """
    strategy = strategy or default_strategy()
    generator = torch.Generator().manual_seed(config.seed)
    train_model = strategy.prepare(model)
    optimizer = _optimizer(model, config)
    start = time.monotonic()
    shard_size = len(strategy.shard(torch.arange(len(data.train_x))))
    batch_size = strategy.batch_size(config.batch_size)  # per worker; config.batch_size is the global one
    steps_per_epoch = max(1, math.ceil(shard_size / batch_size))
    expected = config.max_steps or config.expected_steps or 10 * steps_per_epoch
    warmup = min(0.05, 10.0 / config.budget_s) if math.isfinite(config.budget_s) else 0.05
    schedule = Schedule(expected, warmup, config.horizons)

    def evaluate() -> tuple[np.ndarray, np.ndarray, float]:
        probs, logits = predict_probabilities(model, data.val_x, data.to_input, strategy=strategy)
        return probs, logits, _accuracy(probs, data.val_y)

    best_probs, _, best_acc = evaluate()
    best_acc = best_acc if len(best_probs) else -1.0
    best_state = copy.deepcopy(model.state_dict())
    epochs = steps = bad_epochs = 0
    canceled = stopped_early = False
    while True:
        _train_mode(train_model, config.freeze_batchnorm)
        order = strategy.shard(torch.randperm(len(data.train_x), generator=generator))
        total_loss, correct, seen = 0.0, 0.0, 0
        out_of_time = False
        for batch in range(steps_per_epoch):
            elapsed = strategy.reduce_max(time.monotonic() - start)
            if elapsed >= config.budget_s or (config.max_steps is not None and steps >= config.max_steps):
                out_of_time = True
                break
            if strategy.reduce_max(float(reporter.should_stop())):
                canceled = True
                break
            idx = order[batch * batch_size:(batch + 1) * batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            if steps:
                schedule.update(steps, elapsed, config.budget_s)
            factor = schedule.factor(steps)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * group["lr_scale"] * factor
            xb = data.to_input(strategy.to_device(data.train_x[idx]))
            if data.augment is not None:
                xb = data.augment(xb)
            yb = strategy.to_device(data.train_y[idx])
            with strategy.autocast():
                logits = train_model(strategy.layout(xb))
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
            strategy.step(loss, optimizer)
            steps += 1
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        if seen == 0 and epochs > 0:
            break
        epochs += 1
        probs, logits_np, val_acc = evaluate()
        val_loss = float(F.cross_entropy(torch.from_numpy(logits_np), data.val_y)) if len(probs) else 0.0
        total_loss, correct = strategy.reduce_sum(total_loss), strategy.reduce_sum(correct)
        seen = int(strategy.reduce_sum(seen))
        _report_epoch(reporter, config, epochs, steps, start, seen, total_loss, correct, val_loss, val_acc)
        if val_acc > best_acc:
            best_acc, best_probs, bad_epochs = val_acc, probs, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if canceled or out_of_time:
            break
        if bad_epochs >= config.patience:
            stopped_early = True
            reporter.log(f"{config.trial}: stopping early, no better validation accuracy in "
                         f"{config.patience} epochs")
            break
    model.load_state_dict(best_state)
    strategy.release(model)
    return LoopResult({k: v.cpu() for k, v in best_state.items()}, best_acc, best_probs, epochs,
                      time.monotonic() - start, canceled, stopped_early, steps, list(schedule.horizons))


def _report_epoch(reporter: Reporter, config: LoopConfig, epoch: int, steps: int, start: float, seen: int,
                  total_loss: float, correct: float, val_loss: float, val_acc: float) -> None:
    trial = config.trial
    if seen:
        reporter.metric("train_loss", total_loss / seen, epoch, trial)
        reporter.metric("train_accuracy", correct / seen, epoch, trial)
    reporter.metric("val_loss", val_loss, epoch, trial)
    reporter.metric("val_accuracy", val_acc, epoch, trial)
    elapsed = time.monotonic() - start
    if config.max_steps is not None:
        reporter.progress(trial, min(steps, config.max_steps), config.max_steps)
    else:
        reporter.progress(trial, min(int(elapsed), int(config.budget_s)), int(config.budget_s))
    reporter.log(f"{trial}: epoch {epoch} train_loss={total_loss / max(seen, 1):.4f} "
                 f"val_accuracy={val_acc:.4f} ({elapsed:.0f}s)")
