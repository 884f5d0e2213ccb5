"""One time-budgeted training loop used by every trial that trains with gradients.

The learning rate follows a cosine curve over *wall time* rather than epochs: on shared, noisy
machines an epoch-count schedule sized from the first epoch over- or under-shoots the budget,
while a time-based one always ends its decay when the budget ends.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .reporter import Reporter

Batch = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LoopResult:
    best_state: dict[str, torch.Tensor]
    val_accuracy: float
    val_probabilities: np.ndarray
    epochs: int
    seconds: float
    canceled: bool
    stopped_early: bool


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_probabilities(model: nn.Module, x: torch.Tensor, to_input: Batch, batch_size: int = 256,
                          device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and logits of ``model`` over ``x`` (eval mode)."""
    device = device or next(model.parameters()).device
    model.eval()
    logits = []
    for start in range(0, len(x), batch_size):
        batch = to_input(x[start:start + batch_size].to(device))
        with _autocast(device):
            logits.append(model(batch).float().cpu())
    out = torch.cat(logits) if logits else torch.zeros(0)
    return torch.softmax(out, dim=1).numpy(), out.numpy()


def _autocast(device: torch.device) -> torch.autocast:
    # Mixed precision on GPUs; plain float32 on CPU (no bf16 units here, and autocast costs time).
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def fit_classifier(
    model: nn.Module,
    *,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    to_input: Batch,
    augment: Batch | None,
    budget_s: float,
    reporter: Reporter,
    trial: str,
    lr: float,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    patience: int = 6,
    label_smoothing: float = 0.1,
    seed: int = 0,
    channels_last: bool = True,
    freeze_batchnorm: bool = False,
    lr_scales: list[tuple[nn.Module, float]] | None = None,
) -> LoopResult:
    """Train ``model`` on ``(train_x, train_y)`` for at most ``budget_s`` seconds; keep the best epoch.

    ``to_input`` turns a stored batch (uint8 pixels, float16 activations, ...) into the model's input;
    ``augment`` (optional) is applied to training batches after ``to_input``. ``freeze_batchnorm``
    keeps BatchNorm layers in eval mode (their pretrained statistics), so a warm-started head sees
    the same features in training as in evaluation from the first step. ``lr_scales`` gives parts of
    the model their own learning-rate factor (pretrained layers move slower than a new head).
    """
    device = pick_device()
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    if channels_last and device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    groups: list[dict[str, object]] = []
    assigned: set[int] = set()
    for part, scale in lr_scales or []:
        params = [p for p in part.parameters() if p.requires_grad and id(p) not in assigned]
        assigned.update(id(p) for p in params)
        groups.append({"params": params, "lr_scale": scale})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in assigned]
    groups.append({"params": rest, "lr_scale": 1.0})
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay)
    start = time.monotonic()
    warmup = min(0.05 * budget_s, 10.0)
    # Score the starting point too: a warm-started model (partial fine-tuning begins at the linear
    # head's accuracy) is kept as it is if no epoch within the budget beats it.
    best_probs, _ = predict_probabilities(model, val_x, to_input, device=device)
    best_acc = float((best_probs.argmax(1) == val_y.numpy()).mean()) if len(best_probs) else -1.0
    best_state = copy.deepcopy(model.state_dict())
    epochs, bad_epochs, canceled, stopped_early = 0, 0, False, False
    n = len(train_x)
    steps_per_epoch = max(1, math.ceil(n / batch_size))

    def set_lr() -> float:
        elapsed = time.monotonic() - start
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget_s)))
        factor = elapsed / warmup if elapsed < warmup else cosine
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"] * max(factor, 0.01)
        return elapsed

    while True:
        model.train()
        if freeze_batchnorm:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        order = torch.randperm(n, generator=generator)
        total_loss, correct, seen = 0.0, 0, 0
        out_of_time = False
        for step in range(steps_per_epoch):
            if set_lr() >= budget_s:
                out_of_time = True
                break
            if reporter.should_stop():
                canceled = True
                break
            idx = order[step * batch_size:(step + 1) * batch_size]
            if len(idx) < 2:
                continue
            xb = to_input(train_x[idx].to(device))
            if augment is not None:
                xb = augment(xb)
            if channels_last and xb.dim() == 4 and device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = train_y[idx].to(device)
            with _autocast(device):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        if seen == 0 and epochs > 0:
            break
        epochs += 1
        probs, logits_np = predict_probabilities(model, val_x, to_input, device=device)
        val_acc = float((probs.argmax(1) == val_y.numpy()).mean()) if len(probs) else 0.0
        val_loss = float(F.cross_entropy(torch.from_numpy(logits_np), val_y).item()) if len(probs) else 0.0
        if seen:
            reporter.metric("train_loss", total_loss / seen, epochs, trial)
            reporter.metric("train_accuracy", correct / seen, epochs, trial)
        reporter.metric("val_loss", val_loss, epochs, trial)
        reporter.metric("val_accuracy", val_acc, epochs, trial)
        reporter.progress(trial, min(int(time.monotonic() - start), int(budget_s)), int(budget_s))
        reporter.log(f"{trial}: epoch {epochs} train_loss={total_loss / max(seen, 1):.4f} "
                     f"val_accuracy={val_acc:.4f} ({time.monotonic() - start:.0f}s)")
        if val_acc > best_acc:
            best_acc, best_probs, bad_epochs = val_acc, probs, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if canceled or out_of_time:
            break
        if bad_epochs >= patience:
            stopped_early = True
            reporter.log(f"{trial}: stopping early, no better validation accuracy in {patience} epochs")
            break
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format).to("cpu")
    return LoopResult({k: v.cpu() for k, v in best_state.items()}, best_acc, best_probs, epochs,
                      time.monotonic() - start, canceled, stopped_early)
