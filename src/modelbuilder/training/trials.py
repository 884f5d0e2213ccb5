"""The trials the time-budgeted search tries; each returns a full model (image in, logits out).

- ``linear``: a linear head on frozen backbone features (ML.NET's approach; seconds).
- ``partial_finetune``: the backbone's deeper layers plus the head, trained on cached activations of
  its frozen early layers (each epoch costs a fraction of full fine-tuning).
- ``scratch_cnn``: a compact CNN trained from scratch at the images' native resolution, for small
  images (28x28 digits, icons) where ImageNet features help least.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..pipeline.preprocess import PreprocessSpec
from .loop import fit_classifier, predict_probabilities
from .reporter import Reporter


@dataclass
class TrialOutcome:
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


def _fit_lbfgs(xs: torch.Tensor, y: torch.Tensor, num_classes: int, decay: float,
               max_iter: int = 150) -> nn.Linear:
    linear = nn.Linear(xs.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(xs), y) + decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return linear


def train_linear_head(train_f: np.ndarray, train_y: np.ndarray, val_f: np.ndarray, val_y: np.ndarray,
                      num_classes: int, seed: int = 0,
                      selection_rows: int = 8000, time_limit: float | None = None,
                      ) -> tuple[nn.Linear, float, np.ndarray, float, nn.Sequential]:
    """Multinomial logistic regression with L-BFGS; the L2 strength is chosen on the validation split.

    With many images the strength is chosen on a stratified-enough random subset of ``selection_rows``
    training rows (the choice is stable; the cost is not), then the head is refitted on all rows.
    Returns (folded linear layer, val accuracy, val probabilities, chosen weight decay, and the same
    head unfolded as ``Sequential(Standardize, Linear)`` — weights of a sane scale to train further).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(train_f, dtype=np.float32))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    standardize = Standardize(mean, std)
    xs, vs = standardize(x), standardize(torch.from_numpy(np.asarray(val_f, dtype=np.float32)))
    y, vy = torch.from_numpy(train_y).long(), torch.from_numpy(val_y).long()
    subset = torch.randperm(len(xs), generator=generator)[:selection_rows] if len(xs) > selection_rows \
        else None

    def score(linear: nn.Linear) -> tuple[float, float, np.ndarray]:
        with torch.no_grad():
            logits = linear(vs)
            return (float((logits.argmax(1) == vy).float().mean()), float(F.cross_entropy(logits, vy)),
                    torch.softmax(logits, 1).numpy())

    best: tuple[float, float, float, nn.Linear, np.ndarray] | None = None
    started = time.monotonic()
    for decay in (3e-3, 3e-4, 3e-2):  # the usual winner first: a slow machine may only afford one
        if best is not None and time_limit is not None and time.monotonic() - started > time_limit / 3:
            break
        fit_x, fit_y = (xs, y) if subset is None else (xs[subset], y[subset])
        linear = _fit_lbfgs(fit_x, fit_y, num_classes, decay)
        acc, loss, probs = score(linear)
        if best is None or (acc, -loss) > (best[0], -best[1]):
            best = (acc, loss, decay, linear, probs)
    assert best is not None
    acc, _, decay, linear, probs = best
    if subset is not None:
        linear = _fit_lbfgs(xs, y, num_classes, decay * selection_rows / len(xs))
        acc, _, probs = score(linear)
    return folded_linear(standardize, linear), acc, probs, decay, nn.Sequential(standardize, linear)


def run_linear_trial(name: str, backbone_name: str, backbone: nn.Module, spec: PreprocessSpec,
                     features: tuple[np.ndarray, np.ndarray], labels: tuple[np.ndarray, np.ndarray],
                     num_classes: int, reporter: Reporter, seed: int,
                     time_limit: float | None = None) -> TrialOutcome:
    start = time.monotonic()
    head, acc, probs, decay, unfolded = train_linear_head(features[0], labels[0], features[1], labels[1],
                                                          num_classes, seed, time_limit=time_limit)
    reporter.metric("val_accuracy", acc, 1, name)
    model = nn.Sequential(copy.deepcopy(backbone), head).eval()
    return TrialOutcome(name, "linear", backbone_name, spec, model, acc, probs,
                        time.monotonic() - start,
                        params={"weight_decay": decay, "image_size": spec.crop_size}, head=unfolded)


#: Pretrained layers learn at this fraction of the head's rate: fast enough to adapt in a few epochs,
#: slow enough not to wreck the features the warm-started head relies on.
TAIL_LR_SCALE = 0.2


def flip_augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip of half the batch (images or spatial feature maps)."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    if bool(flip.any()):
        x = x.clone()
        x[flip] = x[flip].flip(-1)
    return x


def run_partial_trial(name: str, backbone_name: str, stem: nn.Module, tail: nn.Module,
                      spec: PreprocessSpec, activations: tuple[np.ndarray, np.ndarray],
                      labels: tuple[np.ndarray, np.ndarray], init_head: nn.Module, budget_s: float,
                      reporter: Reporter, seed: int, lr: float = 1e-3) -> TrialOutcome:
    """Train the tail (deeper blocks + head) on cached stem activations with flip augmentation."""
    torch.manual_seed(seed)
    head = copy.deepcopy(init_head)
    tail_copy = copy.deepcopy(tail)
    trainable = nn.Sequential(tail_copy, nn.Dropout(0.2), head)
    train_x, val_x = torch.from_numpy(activations[0]), torch.from_numpy(activations[1])
    result = fit_classifier(
        trainable, train_x=train_x, train_y=torch.from_numpy(labels[0]).long(), val_x=val_x,
        val_y=torch.from_numpy(labels[1]).long(), to_input=lambda b: b.float(), augment=flip_augment,
        budget_s=budget_s, reporter=reporter, trial=name, lr=lr, batch_size=64, seed=seed,
        freeze_batchnorm=True,  # in train mode the batch statistics would undo the warm-started head
        lr_scales=[(tail_copy, TAIL_LR_SCALE)],
    )
    model = nn.Sequential(copy.deepcopy(stem), trainable).eval()
    return TrialOutcome(name, "partial_finetune", backbone_name, spec, model, result.val_accuracy,
                        result.val_probabilities, result.seconds, result.canceled,
                        {"epochs": result.epochs, "lr": lr, "image_size": spec.crop_size})


def compact_cnn(num_classes: int, width: int = 32) -> nn.Module:
    """A small VGG-style CNN (~120k parameters at width 32) for small images.

    Only one convolution runs at full resolution: on 2 CPU cores that is what lets it see the
    training set several times within a few minutes (measured on 48k 28x28 images, 240 s: 4 epochs
    and 88.2% test accuracy, against 1 epoch and 82.0% with a second full-resolution block).
    """

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    return nn.Sequential(
        block(3, width), nn.MaxPool2d(2),
        block(width, 2 * width), block(2 * width, 2 * width), nn.MaxPool2d(2),
        block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(4 * width, num_classes),
    )


def shift_flip_augment(pad: int) -> Any:
    def augment(x: torch.Tensor) -> torch.Tensor:
        x = flip_augment(x)
        size = x.shape[-1]
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        i, j = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
        return padded[:, :, i:i + size, j:j + size]

    return augment


def run_scratch_trial(name: str, spec: PreprocessSpec, pool: int, images: tuple[np.ndarray, np.ndarray],
                      labels: tuple[np.ndarray, np.ndarray], num_classes: int, budget_s: float,
                      reporter: Reporter, seed: int, width: int = 32, lr: float = 2e-3) -> TrialOutcome:
    """Train ``compact_cnn`` from scratch on small images with shift+flip augmentation.

    ``images`` are the model inputs (normalised as ``spec`` says) average-pooled by ``pool``: the
    exported model starts with the same pooling, so it takes the same input as the backbone trials
    and can be ensembled with them in one graph.
    """
    torch.manual_seed(seed)
    cnn = compact_cnn(num_classes, width)
    size = images[0].shape[-1]
    result = fit_classifier(
        cnn, train_x=torch.from_numpy(images[0]), train_y=torch.from_numpy(labels[0]).long(),
        val_x=torch.from_numpy(images[1]), val_y=torch.from_numpy(labels[1]).long(),
        to_input=lambda b: b.float(), augment=shift_flip_augment(max(1, size // 8)), budget_s=budget_s,
        reporter=reporter, trial=name, lr=lr, weight_decay=5e-4, batch_size=128, seed=seed, patience=8,
    )
    model = nn.Sequential(nn.AvgPool2d(pool), cnn).eval() if pool > 1 else cnn.eval()
    return TrialOutcome(name, "scratch_cnn", "compact_cnn", spec, model, result.val_accuracy,
                        result.val_probabilities, result.seconds, result.canceled,
                        {"epochs": result.epochs, "lr": lr, "width": width, "cnn_size": size,
                         "image_size": spec.crop_size})


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
    from itertools import combinations

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


__all__ = [
    "Ensemble", "TrialOutcome", "best_ensemble", "predict_probabilities", "run_linear_trial",
    "run_partial_trial", "run_scratch_trial",
]
