"""The feature pass: one onnxruntime pass over the images gives every cached array the trials need.

Before it, a short probe measures this machine's feature rate and lowers the resolution when the pass
would not fit; when even that is too slow, the training images are subsampled (stratified) so that the
run still ends within its budget. Both choices go into the plan, so a replay makes the same ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..data import ImageItem
from .backbones import get_backbone_spec, split_backbone
from .features import extract_cached, feature_cache_for, run_onnx_outputs
from .onnx_export import export_onnx, ort_session
from .plan import Plan, feature_rate, make_plan
from .reporter import Reporter

PROBE_IMAGES = 48
#: Only a pass over at least this many uncached images is worth a probe.
PROBE_MIN_MISSING = 1500
#: The feature pass may take at most this share of the time left; beyond it, training images are
#: subsampled (stratified) so that the run still ends within its budget.
FEATURE_SHARE_MAX = 0.45
#: The arrays a feature pass can produce (what ``Trial.needs`` may name).
ARRAYS = ("features", "stem", "small")
#: How each array is cached.
DTYPES: dict[str, type] = {"features": np.float32, "stem": np.float16, "small": np.float16}


@dataclass
class BackboneParts:
    backbone: nn.Module  # the whole feature extractor
    stem: nn.Module
    tail: nn.Module
    stride: int
    weights_id: str  # identifies the weights in feature-cache keys


class CachedOutputs(nn.Module):
    """One pass over the images gives the requested outputs: pooled features, stem activations and
    the input average-pooled to the images' own size."""

    def __init__(self, stem: nn.Module, tail: nn.Module, pool: int | None, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.stem, self.tail, self.pool, self.outputs = stem, tail, pool, outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values: dict[str, torch.Tensor] = {}
        if "stem" in self.outputs or "features" in self.outputs:
            values["stem"] = self.stem(x)
            if "features" in self.outputs:
                values["features"] = self.tail(values["stem"])
        if "small" in self.outputs:
            values["small"] = nn.functional.avg_pool2d(x, self.pool) if self.pool and self.pool > 1 else x
        return tuple(values[name] for name in self.outputs)


def calibrate(plan: Plan, parts: BackboneParts, items: list[ImageItem], reporter: Reporter,
              tmp: Path) -> tuple[Plan, bool]:
    """Measure the feature rate on a few images; lower the resolution if the pass would be too slow.

    Only when many features are missing from the cache: a second run on the same data keeps its plan.
    Updates ``parts`` for the new resolution; returns the (new) plan with the measured rate and speed,
    and whether it measured.
    """
    spec = get_backbone_spec(plan.backbone)
    cache = feature_cache_for(plan.backbone, parts.weights_id, spec.preprocessing(plan.feature_size),
                              "features")
    missing = sum(1 for item in items if item.sha256 not in cache)
    del cache
    if missing < PROBE_MIN_MISSING:
        return plan, False
    session = ort_session(export_onnx(nn.Sequential(parts.stem, parts.tail), plan.feature_size,
                                      tmp / "probe.onnx"))
    paths = [item.path for item in items[:PROBE_IMAGES + 16]]
    feature_spec = spec.preprocessing(plan.feature_size)
    run_onnx_outputs(session, paths[:16], feature_spec, ["output1"])  # warm-up
    started = time.monotonic()
    run_onnx_outputs(session, paths[16:], feature_spec, ["output1"])
    rate = max(1, len(paths) - 16) / max(time.monotonic() - started, 1e-6)
    scale = rate / feature_rate(spec, plan.feature_size)
    replanned = make_plan(plan.backbone, plan.data, missing, plan.budget_s, rate_scale=scale)
    reporter.log(f"features: measured {rate:.0f} images/s at {plan.feature_size}px "
                 f"({scale:.2f}x the expected rate) -> {replanned.feature_size}px")
    if replanned.feature_size != plan.feature_size:
        parts.stem, parts.tail, parts.stride = split_backbone(plan.backbone, parts.backbone,
                                                              replanned.feature_size)
    return replace(plan, feature_size=replanned.feature_size, scratch_pool=replanned.scratch_pool,
                   speed=scale, feature_rate=replanned.feature_rate,
                   feature_seconds=replanned.feature_seconds), True


def subsample_stratified(items: list[ImageItem], y: np.ndarray, limit: int,
                         seed: int) -> tuple[list[ImageItem], np.ndarray]:
    """At most ``limit`` items, each label keeping its share (and at least 2), chosen reproducibly."""
    if len(items) <= limit:
        return items, y
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        count = max(2, int(round(len(members) * limit / len(items))))
        keep.extend(rng.choice(members, size=min(count, len(members)), replace=False).tolist())
    keep.sort()
    return [items[i] for i in keep], y[keep]


def train_limit(plan: Plan, num_items: int, num_val: int, num_labels: int, time_left: float) -> int | None:
    """How many training images the feature pass can afford (None: all of them)."""
    if plan.feature_seconds <= 0 or plan.feature_rate <= 0:
        return None
    limit = int(FEATURE_SHARE_MAX * time_left * plan.feature_rate)
    if num_items <= limit:
        return None
    return max(num_labels * 2, limit - num_val)


def extract(plan: Plan, parts: BackboneParts, items: list[ImageItem], needs: set[str], reporter: Reporter,
            tmp: Path) -> tuple[dict[str, np.ndarray], int]:
    """The cached arrays in ``needs`` for ``items`` (computing only what the cache lacks), in the
    items' order, memory-mapped from the feature cache (see ``feature_cache``): none of them is held
    in this process's memory, whatever the number of images.

    Returns (arrays by name, number of images computed). Raises InterruptedError on cancel.
    """
    outputs = tuple(name for name in ARRAYS if name in needs)
    if not outputs:
        return {}, 0
    spec = get_backbone_spec(plan.backbone).preprocessing(plan.feature_size)
    names = {"features": "features", "stem": f"stem{parts.stride}", "small": f"pool{plan.scratch_pool}"}
    caches = {name: feature_cache_for(plan.backbone, parts.weights_id, spec, names[name], DTYPES[name])
              for name in outputs}
    onnx_path = export_onnx(CachedOutputs(parts.stem, parts.tail, plan.scratch_pool, outputs),
                            plan.feature_size, tmp / "f.onnx", output_names=outputs)
    arrays, computed = extract_cached(
        ort_session(onnx_path), [i.path for i in items], [i.sha256 for i in items], spec, caches,
        progress=lambda d, t: reporter.progress("features", d, t), should_stop=reporter.should_stop,
    )
    return arrays, computed
