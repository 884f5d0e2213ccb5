"""The time-budgeted training run: scan -> features -> trials -> export the best -> outputs.

``run_training`` is what every compute backend calls (in-process, in a worker process, on a Ray
worker). It never touches the workspace store: everything it has to say goes through the Reporter.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data import DataIssue, Dataset, ImageItem, scan_dataset, split_dataset
from ..pipeline.preprocess import preprocess
from .backbones import create_backbone, get_backbone_spec, split_backbone
from .checkpoint import CheckpointDir, FinishedTrial
from .config import TrainingConfig, TrainingResult, TrialSummary
from .features import extract_cached, feature_cache_for, run_onnx_outputs
from .finalize import finalize_outputs
from .onnx_export import check_parity, export_onnx, ort_session
from .plan import Plan, choose_backbone, feature_rate, make_plan
from .reporter import Reporter
from .trials import (
    Ensemble,
    TrialOutcome,
    best_ensemble,
    run_linear_trial,
    run_partial_trial,
    run_scratch_trial,
)
from .weights import find_weights

logger = logging.getLogger(__name__)

MIN_TRIAL_SECONDS = 3.0
MIN_SCRATCH_SECONDS = 15.0  # a from-scratch CNN needs a few epochs to beat the pretrained trials


class _Clock:
    def __init__(self, budget: float, used_before: float) -> None:
        self.start = time.monotonic()
        self.budget = budget
        self.used_before = used_before
        self.save_seconds = 0.0  # the slowest trial export + parity check seen so far

    def elapsed(self) -> float:
        return self.used_before + time.monotonic() - self.start

    def left(self, saves_to_come: int = 1) -> float:
        """Seconds a trial may still train, keeping what its own export, an ensemble export and the
        final outputs will take (measured on this machine's earlier exports) inside the budget."""
        reserve = min(max(1.0, 0.03 * self.budget), 20.0) + (saves_to_come + 2) * self.save_seconds
        return self.budget - reserve - self.elapsed()


class _FeaturesAndStem(nn.Module):
    """One pass over the images gives pooled features, stem activations and (optionally) small images."""

    def __init__(self, stem: nn.Module, tail: nn.Module, pool: int | None) -> None:
        super().__init__()
        self.stem, self.tail, self.pool = stem, tail, pool

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        activations = self.stem(x)
        if self.pool:
            return self.tail(activations), activations, nn.functional.avg_pool2d(x, self.pool)
        return self.tail(activations), activations


def _scan(config: TrainingConfig, reporter: Reporter) -> tuple[Dataset, list[ImageItem], list[ImageItem],
                                                                 Dataset | None]:
    reporter.phase("scanning", f"Checking images in {config.data}")
    dataset = scan_dataset(config.data, on_bad_image=config.on_bad_image,
                           progress=lambda done, total: reporter.progress("scanning", done, total))
    validation = None
    if config.validation_data:
        validation = scan_dataset(config.validation_data, on_bad_image=config.on_bad_image,
                                  require_labels=dataset.labels)
        train_items, val_items = list(dataset.items), list(validation.items)
    else:
        train_items, val_items = split_dataset(dataset, config.validation_fraction, config.seed)
    _log_issues(reporter, dataset.issues + (validation.issues if validation else []))
    reporter.log(f"data: {len(dataset.labels)} labels, {len(train_items)} training and "
                 f"{len(val_items)} validation images, {len(dataset.skipped())} skipped")
    return dataset, train_items, val_items, validation


def _log_issues(reporter: Reporter, issues: list[DataIssue], per_kind: int = 5) -> None:
    """Every skipped file is logged; informational issues (conversions) are summarised per kind."""
    by_kind: dict[str, list[DataIssue]] = {}
    for issue in issues:
        by_kind.setdefault(f"{issue.kind}/{issue.action}", []).append(issue)
    for kind, group in sorted(by_kind.items()):
        shown = group if group[0].action == "skipped" else group[:per_kind]
        for issue in shown:
            reporter.log(f"data: [{kind}] {issue.message}")
        if len(group) > len(shown):
            reporter.log(f"data: [{kind}] ... and {len(group) - len(shown)} more like this")


def _save_trial(outcome: TrialOutcome, labels: list[str], val_items: list[ImageItem],
                checkpoints: CheckpointDir, clock: _Clock) -> FinishedTrial:
    """Export the trial's model, prove ONNX parity on real validation images, and checkpoint it."""
    from ..pipeline.onnx_metadata import onnx_metadata_props

    started = time.monotonic()
    onnx_file = f"{outcome.name}.onnx"
    path = checkpoints.root / onnx_file
    export_onnx(outcome.model, outcome.preprocessing.crop_size, path,
                onnx_metadata_props(labels, outcome.preprocessing))
    sample = np.stack([preprocess(item.path, outcome.preprocessing) for item in val_items[:8]])
    check_parity(outcome.model, path, sample)
    finished = FinishedTrial(outcome.name, outcome.strategy, outcome.backbone, outcome.val_accuracy,
                             outcome.seconds, outcome.preprocessing.to_dict(), outcome.params, onnx_file,
                             f"{outcome.name}.probs.npy", outcome.canceled)
    checkpoints.add(finished, outcome.val_probabilities, clock.elapsed())
    clock.save_seconds = max(clock.save_seconds, time.monotonic() - started)
    return finished


def run_training(config: TrainingConfig, reporter: Reporter, work_dir: Path, *,
                 checkpoint_dir: Path | None = None) -> TrainingResult:
    """Train within ``config.time_budget`` seconds and write the outputs into ``work_dir``.

    Raises:
        DatasetError: the data cannot be used (before any training starts).
        WeightsError / BackboneNotFoundError: the architecture cannot be built.
        ExportError: the exported model does not match the trained one.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    temp_checkpoints = checkpoint_dir is None
    checkpoints = CheckpointDir(Path(checkpoint_dir) if checkpoint_dir
                                else Path(tempfile.mkdtemp(prefix=".trials-", dir=work_dir)))
    clock = _Clock(config.time_budget, checkpoints.elapsed)
    if checkpoints.trials:
        reporter.log(f"Resuming: {len(checkpoints.trials)} finished trial(s), "
                     f"{checkpoints.elapsed:.0f}s of the budget already used")
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    try:
        dataset, train_items, val_items, validation = _scan(config, reporter)
        labels = dataset.labels
        index = {label: i for i, label in enumerate(labels)}
        y_train = np.array([index[i.label] for i in train_items], dtype=np.int64)
        y_val = np.array([index[i.label] for i in val_items], dtype=np.int64)
        backbone_name = choose_backbone(config.architecture, config.weights)
        side = int(np.median([min(i.width, i.height) for i in train_items]))
        plan = make_plan(backbone_name, side, len(train_items) + len(val_items), config.time_budget)
        reporter.log(f"plan: {plan.describe()}; budget {config.time_budget:.0f}s")
        canceled = _run_trials(config, reporter, plan, labels, train_items, val_items, y_train, y_val,
                               checkpoints, clock)
        finished = [t for t in checkpoints.trials if t.val_accuracy >= 0]
        if not finished:
            reporter.log("Canceled before any trial finished: no model to keep.")
            return TrainingResult(0.0, 0.0, backbone_name, "none", labels, clock.elapsed(), work_dir, {},
                                  [], _skipped(dataset, validation), {}, canceled=True)
        best = max(finished, key=lambda t: t.val_accuracy)
        reporter.phase("export", f"Exporting {best.strategy} ({best.val_accuracy:.2%})")
        evaluation, files = finalize_outputs(
            config, reporter, work_dir, best, checkpoints, labels, val_items, y_val,
            _skipped(dataset, validation),
        )
        trials = [TrialSummary(t.name, t.strategy, t.backbone, int(t.preprocessing["crop_size"]),
                               t.val_accuracy, t.seconds, "Canceled" if t.canceled else "Completed",
                               t.params) for t in checkpoints.trials]
        return TrainingResult(
            accuracy=float(evaluation["accuracy"]), macro_accuracy=float(evaluation["macro_accuracy"]),
            backbone=best.backbone, strategy=best.strategy, labels=labels, seconds=clock.elapsed(),
            output_dir=work_dir, files=files, trials=trials, skipped_images=_skipped(dataset, validation),
            evaluation=evaluation, canceled=canceled,
        )
    finally:
        if temp_checkpoints:
            checkpoints.remove()


def _skipped(dataset: Dataset, validation: Dataset | None) -> list[dict[str, str]]:
    issues = dataset.skipped() + (validation.skipped() if validation else [])
    return [{"path": i.path, "kind": i.kind, "message": i.message} for i in issues]


def _run_trials(config: TrainingConfig, reporter: Reporter, plan: Plan, labels: list[str],
                train_items: list[ImageItem], val_items: list[ImageItem], y_train: np.ndarray,
                y_val: np.ndarray, checkpoints: CheckpointDir, clock: _Clock) -> bool:
    """Run the planned trials in order while time remains. Returns True if canceled."""
    allowed = set(config.strategies or ("linear", "partial_finetune", "scratch_cnn", "ensemble"))
    max_trials = config.max_trials or 99
    spec = get_backbone_spec(plan.backbone)
    feature_spec = spec.preprocessing(plan.feature_size)
    backbone = create_backbone(plan.backbone, pretrained=True, weights=config.weights).eval()
    stem, tail, stride = split_backbone(plan.backbone, backbone, plan.feature_size)
    source = find_weights(spec, config.weights)
    weights_id = "random" if source is None or source.path is None else \
        f"{source.path.name}:{source.path.stat().st_size}"

    items = train_items + val_items
    with tempfile.TemporaryDirectory() as tmp:
        plan, stem, tail, stride, rate = _calibrate(plan, backbone, stem, tail, stride, items, weights_id,
                                                    config.time_budget, reporter, Path(tmp))
        limit = int(FEATURE_SHARE_MAX * clock.left() * rate) if rate else 0
        if rate and len(items) > limit:
            kept = max(len(labels) * 2, limit - len(val_items))
            reporter.log(f"features: {len(train_items)} training images would take "
                         f"{len(items) / rate:.0f}s at {rate:.0f} images/s; using a stratified "
                         f"{kept} of them to stay within the time budget (give more --time to use all)")
            train_items, y_train = subsample_stratified(train_items, y_train, kept, config.seed)
            items = train_items + val_items
        feature_spec = spec.preprocessing(plan.feature_size)
        reporter.phase("features", f"Computing {plan.backbone} features at {plan.feature_size}px")
        outputs = ("features", "stem") + (("small",) if plan.scratch_pool else ())
        onnx_path = export_onnx(_FeaturesAndStem(stem, tail, plan.scratch_pool), plan.feature_size,
                                Path(tmp) / "f.onnx", output_names=outputs)
        caches = {
            "features": feature_cache_for(plan.backbone, weights_id, feature_spec, "features"),
            "stem": feature_cache_for(plan.backbone, weights_id, feature_spec, f"stem{stride}", np.float16),
        }
        if plan.scratch_pool:
            caches["small"] = feature_cache_for(plan.backbone, weights_id, feature_spec,
                                                f"pool{plan.scratch_pool}", np.float16)
        started = time.monotonic()
        try:
            arrays, computed = extract_cached(
                ort_session(onnx_path), [i.path for i in items], [i.sha256 for i in items], feature_spec,
                caches, progress=lambda d, t: reporter.progress("features", d, t),
                should_stop=reporter.should_stop,
            )
        except InterruptedError:
            return True
        del caches  # the arrays hold what training needs; keep one copy in memory, not two
    seconds = time.monotonic() - started
    reporter.log(f"features: {len(items)} images ({computed} computed, {len(items) - computed} from cache) "
                 f"in {seconds:.1f}s" + (f", {computed / seconds:.0f} images/s" if computed else ""))
    if computed:
        reporter.metric("feature_images_per_second", computed / max(seconds, 1e-6))
    n = len(train_items)
    feats = arrays["features"]

    outcomes: dict[str, TrialOutcome] = {}

    def run(name: str, params: dict[str, Any], body: Callable[[], TrialOutcome]) -> TrialOutcome | None:
        if name not in allowed or len(checkpoints.trials) >= max_trials:
            return None
        if (done := checkpoints.done(name)) is not None:
            reporter.log(f"{name}: already finished before resume ({done.val_accuracy:.4f})")
            return None
        reporter.phase("trial", name)
        reporter.trial_started(name, params)
        try:
            outcome = body()
        except Exception:
            reporter.trial_ended(name, "Failed", {})
            raise
        _save_trial(outcome, labels, val_items, checkpoints, clock)
        outcomes[name] = outcome
        status = "Canceled" if outcome.canceled else "Completed"
        reporter.trial_ended(name, status, {"val_accuracy": outcome.val_accuracy,
                                            "seconds": outcome.seconds})
        reporter.log(f"{name}: val_accuracy={outcome.val_accuracy:.4f} in {outcome.seconds:.1f}s")
        return outcome

    linear = run("linear", {"backbone": plan.backbone, "image_size": plan.feature_size},
                 lambda: run_linear_trial("linear", plan.backbone, backbone, feature_spec,
                                          (feats[:n], feats[n:]), (y_train, y_val), len(labels),
                                          reporter, config.seed, time_limit=0.15 * config.time_budget))
    if reporter.should_stop():
        return True
    if linear is not None and linear.head is not None:
        init_head = linear.head
    else:  # resumed after the linear trial: refit the (seconds-cheap) head from the cached features
        init_head = _head_from_checkpoint(feats[:n], feats[n:], y_train, y_val, len(labels), config.seed)
    remaining = clock.left(saves_to_come=2)
    scratch_minimum = MIN_TRIAL_SECONDS if plan.backbone == "test_tiny" else MIN_SCRATCH_SECONDS
    scratch_planned = (plan.scratch_pool and "scratch_cnn" in allowed and not checkpoints.done("scratch_cnn")
                       and remaining * (1 - plan.partial_share) >= scratch_minimum)
    share = plan.partial_share
    if scratch_planned:
        # Tail training costs ~4x the tail's share of a forward pass per image; when it cannot see the
        # training set twice in its share, the from-scratch CNN makes better use of the time.
        rate = computed / seconds if computed else feature_rate(plan.feature_size)
        if 2 * 4.0 * n / max(rate, 1e-6) > share * remaining:
            share = 0.35
    partial_budget = remaining * (share if scratch_planned else 1.0)
    if partial_budget >= MIN_TRIAL_SECONDS:
        run("partial_finetune", {"backbone": plan.backbone, "image_size": plan.feature_size,
                                 "budget_s": round(partial_budget, 1)},
            lambda: run_partial_trial("partial_finetune", plan.backbone, stem, tail, feature_spec,
                                      (arrays["stem"][:n], arrays["stem"][n:]), (y_train, y_val),
                                      init_head, partial_budget, reporter, config.seed))
    if reporter.should_stop():
        return True
    arrays.pop("stem")  # the largest array; the scratch trial does not need it
    remaining = clock.left()
    if plan.scratch_pool and remaining >= scratch_minimum:
        small = arrays["small"]
        run("scratch_cnn", {"image_size": plan.feature_size, "pool": plan.scratch_pool,
                            "budget_s": round(remaining, 1)},
            lambda: run_scratch_trial("scratch_cnn", feature_spec, plan.scratch_pool or 1,
                                      (small[:n], small[n:]), (y_train, y_val), len(labels), clock.left(),
                                      reporter, config.seed))
    if reporter.should_stop():
        return True
    combo = best_ensemble(list(outcomes.values()), y_val)
    if combo is not None and "ensemble" in allowed:
        members, accuracy, probs = combo
        names = [m.name for m in members]
        reporter.log(f"ensemble of {', '.join(names)}: val_accuracy={accuracy:.4f}")
        outcome = TrialOutcome("ensemble", "ensemble(" + "+".join(m.strategy for m in members) + ")",
                               plan.backbone, feature_spec, Ensemble([m.model for m in members]).eval(),
                               accuracy, probs, 0.0, params={"members": names})
        run("ensemble", {"members": names}, lambda: outcome)
    return reporter.should_stop()


PROBE_IMAGES = 48


def _calibrate(plan: Plan, backbone: nn.Module, stem: nn.Module, tail: nn.Module, stride: int,
               items: list[ImageItem], weights_id: str, budget: float, reporter: Reporter,
               tmp: Path) -> tuple[Plan, nn.Module, nn.Module, int, float | None]:
    """Measure the feature rate on a few images and lower the resolution if the pass would be too slow.

    Only when many features are missing from the cache: a second run on the same data keeps its plan.
    Returns the (new) plan and parts, and the expected images/s at the chosen size (None: not measured).
    """
    spec = get_backbone_spec(plan.backbone)
    if not spec.needs_weights:
        return plan, stem, tail, stride, None
    cache = feature_cache_for(plan.backbone, weights_id, spec.preprocessing(plan.feature_size), "features")
    missing = sum(1 for item in items if item.sha256 not in cache)
    del cache
    if missing < 1500:
        return plan, stem, tail, stride, None
    session = ort_session(export_onnx(nn.Sequential(stem, tail), plan.feature_size, tmp / "probe.onnx"))
    paths = [item.path for item in items[:PROBE_IMAGES + 16]]
    feature_spec = spec.preprocessing(plan.feature_size)
    run_onnx_outputs(session, paths[:16], feature_spec, ["output1"])  # warm-up
    started = time.monotonic()
    run_onnx_outputs(session, paths[16:], feature_spec, ["output1"])
    rate = max(1, len(paths) - 16) / max(time.monotonic() - started, 1e-6)
    scale = rate / feature_rate(plan.feature_size)
    replanned = make_plan(plan.backbone, plan.typical_side, missing, budget, rate_scale=scale)
    reporter.log(f"features: measured {rate:.0f} images/s at {plan.feature_size}px "
                 f"({scale:.2f}x the expected rate) -> {replanned.feature_size}px")
    expected = feature_rate(replanned.feature_size, scale)
    if replanned.feature_size == plan.feature_size:
        return plan, stem, tail, stride, expected
    stem, tail, stride = split_backbone(plan.backbone, backbone, replanned.feature_size)
    return replanned, stem, tail, stride, expected


#: Feature extraction may take at most this share of the time left; beyond it, training images are
#: subsampled (stratified) so that the run still ends within its budget.
FEATURE_SHARE_MAX = 0.45


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





def _head_from_checkpoint(train_f: np.ndarray, val_f: np.ndarray, y_train: np.ndarray, y_val: np.ndarray,
                          num_classes: int, seed: int) -> nn.Module:
    from .trials import train_linear_head

    return train_linear_head(train_f, y_train, val_f, y_val, num_classes, seed)[4]
