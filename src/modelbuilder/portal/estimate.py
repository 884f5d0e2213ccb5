"""The Train step's estimate, shown before anything starts: the plan the trainer would make for this data
and budget, made the trainer's way (``training.plan.make_plan`` and each trial's own ``estimate``) from the
preview's facts, without decoding or training anything.

The accuracy band is not a promise: it comes from earlier completed runs of this workspace on the same
data (same content fingerprint), widened by how precisely a validation set of this size can measure
accuracy (a 95% binomial interval). Without such a run the page says there is no data to predict from and
gives only that measuring precision.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from ..entities import RunStatus
from ..errors import MissingDependencyError, ModelBuilderError
from ..services import runs as run_service
from ..services.workspaces import WorkspaceSession
from .datasources import Preview

logger = logging.getLogger(__name__)

ACCURACY_KEYS = ("accuracy", "val_accuracy")
PLAN_FILE = "plan.json"  # training.trainer.PLAN_FILE (not imported: that module needs torch)


@dataclass
class Estimate:
    backbone: str
    resolution: int
    images: int  # images to featurize now (those whose features are not cached yet)
    feature_seconds: float
    budget_s: float
    cached_images: int = 0
    feature_method: str = ""
    trials: list[dict[str, Any]] = field(default_factory=list)
    trials_note: str | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    accuracy_method: str = ""
    validation_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _validation_count(images: int, fraction: float, labels: int) -> int:
    # The split keeps at least one validation image per label.
    return max(labels, round(images * fraction))


def estimate_training(
    session: WorkspaceSession,
    preview: Preview,
    budget_s: float,
    architecture: str = "auto",
    validation_fraction: float = 0.2,
    fingerprint: str | None = None,
) -> Estimate:
    """What the trainer will do with this data and budget (see the module docstring).

    Raises:
        WeightsError / BackboneNotFoundError: no backbone can be used (as training would fail).
    """
    from ..training.plan import DataFacts, apply_estimates, choose_backbone, make_plan

    labels = len(preview.labels)
    images = preview.images
    num_val = _validation_count(images, validation_fraction, labels)
    facts = DataFacts(num_train=images - num_val, num_val=num_val,
                      typical_side=min(preview.typical_size) if preview.typical_size[0] else 224,
                      channels=3, num_labels=labels)
    backbone = choose_backbone(architecture, None)
    measured = _measured_speed(session, backbone)
    scale = measured[0] if measured else 1.0
    plan = make_plan(backbone, facts, images, budget_s, rate_scale=scale)
    cached = _cached_features(backbone, plan.feature_size, preview.hashes)
    if cached:  # the trainer plans for the images still to featurize, as its calibration does
        plan = make_plan(backbone, facts, images - cached, budget_s, rate_scale=scale)
    estimate = Estimate(backbone, plan.feature_size, images - cached, round(plan.feature_seconds, 6),
                        budget_s, cached_images=cached, validation_images=num_val)
    speed = (f"this machine's speed as measured by run {measured[1][:8]} ({scale:.2f}x the backbone's "
             "reference rates)" if measured else
             "the backbone's reference rates for this machine's cores; on larger data the run measures the "
             "real speed first and re-plans")
    estimate.feature_method = (
        f"The trainer's own plan: {plan.feature_rate:.0f} images/s expected for {backbone} at "
        f"{plan.feature_size} px on {plan.cores} cores, from {speed}"
        + (f"; {cached} images have cached features from earlier runs." if cached else ".")
    )
    try:
        from ..training.plan import PlannedTrial
        from ..training.registry import get_trial, known_trial_names

        plan.trials = [PlannedTrial(name) for name in known_trial_names()]
        left = max(0.0, budget_s - plan.feature_seconds)
        apply_estimates(plan, [(t.name, get_trial(t.name).estimate(plan, left)) for t in plan.trials], left)
        estimate.trials = [
            {"name": t.name, "status": t.status, "budget_s": round(t.budget_s, 1),
             "image_size": t.image_size, "epochs": t.epochs}
            for t in plan.trials
        ]
    except (ImportError, MissingDependencyError) as exc:  # the portal may run without the [train] extra
        estimate.trials_note = f"Trial estimates need the training extra ({exc}); the run plans them itself."
    _accuracy_band(session, estimate, fingerprint)
    return estimate


#: Completed runs looked at for a measured speed (newest first).
SPEED_HISTORY = 20


def _measured_speed(session: WorkspaceSession, backbone: str) -> tuple[float, str] | None:
    """The feature-pass speed (measured / reference rate) that the newest completed run of this backbone
    measured on a large enough pass (its plan.json ``speed``; 1.0: it did not measure), and its run id."""
    try:
        runs = run_service.list_runs(session, statuses=[RunStatus.COMPLETED], limit=SPEED_HISTORY)
    except ModelBuilderError:
        return None
    for run in runs:
        try:
            plan = json.loads(session.artifacts.resolve(run.id, PLAN_FILE).read_text(encoding="utf-8"))
        except (ModelBuilderError, OSError, ValueError):
            continue
        if not isinstance(plan, dict) or plan.get("backbone") != backbone:
            continue
        speed = plan.get("speed")
        if isinstance(speed, (int, float)) and speed > 0 and speed != 1.0:
            return float(speed), run.id
    return None


def _cached_features(backbone: str, size: int, hashes: list[str]) -> int:
    """How many of these images already have features in this machine's feature cache (0 when unknown)."""
    try:
        from ..training.backbones import get_backbone_spec
        from ..training.features import feature_cache_for
        from ..training.weights import find_weights

        spec = get_backbone_spec(backbone)
        source = find_weights(spec, None)
        # The same key as the trainer's (training/search.py): weights file name and size, or "random".
        weights_id = "random" if source is None or source.path is None else \
            f"{source.path.name}:{source.path.stat().st_size}"
        cache = feature_cache_for(backbone, weights_id, spec.preprocessing(size), "features")
        return sum(1 for sha in set(hashes) if sha in cache)
    except (ModelBuilderError, OSError, ValueError) as exc:
        logger.debug("Feature cache not consulted: %s", exc)
        return 0


def _accuracy_band(session: WorkspaceSession, estimate: Estimate, fingerprint: str | None) -> None:
    n = max(1, estimate.validation_images)
    earlier: list[float] = []
    if fingerprint is not None:
        try:
            for run in run_service.list_runs(session, statuses=[RunStatus.COMPLETED]):
                if run.dataset_fingerprint == fingerprint and run.parent_run_id is None:
                    metrics = run.latest_metrics
                    value = next((metrics[k] for k in ACCURACY_KEYS if k in metrics), None)
                    if value is not None and math.isfinite(value):
                        earlier.append(float(value))
        except (ModelBuilderError, TypeError) as exc:  # an estimate must not fail on history
            logger.debug("No run history for the estimate: %s", exc)
    if earlier:
        low, high = min(earlier), max(earlier)
        margin_low = 1.96 * math.sqrt(max(low * (1 - low), 0.25 / n) / n)
        margin_high = 1.96 * math.sqrt(max(high * (1 - high), 0.25 / n) / n)
        estimate.accuracy_low = max(0.0, low - margin_low)
        estimate.accuracy_high = min(1.0, high + margin_high)
        estimate.accuracy_method = (
            f"From {len(earlier)} earlier completed run{'s' if len(earlier) != 1 else ''} on the same data "
            f"in this workspace ({low:.1%}–{high:.1%}), widened by the 95% interval of a {n}-image "
            "validation set."
        )
    else:
        margin = 1.96 * math.sqrt(0.25 / n)
        estimate.accuracy_method = (
            "No earlier run on this data in this workspace, so there is nothing to predict the accuracy "
            f"from. With {n} validation images, the measured accuracy will be precise to about "
            f"±{margin:.0%} (95% binomial interval)."
        )
