"""The Train step's estimate, shown before anything starts: the plan the trainer would make for this data
and budget, made the trainer's way (``training.plan.make_plan`` and each trial's own ``estimate``) from the
preview's facts.

The feature-pass time is ``overhead + images / rate``, the same quantity the trainer records as the plan's
``feature_seconds`` (``training.search``: ONNX export, onnxruntime session start and the pass itself):

- the fixed overhead (export + session start + the first batch's warm-up + writing the cache) and the
  per-image rate come from a short live probe through the trainer's own functions (``estimate_probe``,
  in a fresh process as the trainer's worker is) on a sample of these images spread over their file
  sizes (decoding grows with the source's pixels), cached per host, backbone, resolution, outputs and
  source-size class under ``$MODELBUILDER_HOME/cache`` for ``PROBE_MAX_AGE_S``, so repeated estimates
  (another budget) are instant;
- when an earlier completed run on the same data measured this machine (its plan.json ``speed``), its
  rate is used instead of the probe's (it measured many more images), corrected for the overhead it
  included; a run on other data decoded other images, so its rate is not used;
- without the training extra nothing can be probed: the backbone's reference rates are used and the page
  says that the overhead is not included.

The accuracy band is not a promise: it comes from earlier completed runs of this workspace on the same
data (same content fingerprint), widened by how precisely a validation set of this size can measure
accuracy (a 95% binomial interval). Without such a run the page says there is no data to predict from and
gives only that measuring precision.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import settings
from ..entities import RunStatus
from ..errors import MissingDependencyError, ModelBuilderError
from ..fileio import atomic_write_text
from ..services import artifacts as artifact_service
from ..services import runs as run_service
from ..services.workspaces import WorkspaceSession
from .datasources import Preview
from .estimate_probe import ProbeTiming, sample_paths

if TYPE_CHECKING:
    from ..training.plan import DataFacts, Plan

logger = logging.getLogger(__name__)

ACCURACY_KEYS = ("accuracy", "val_accuracy")
PLAN_FILE = "plan.json"  # training.trainer.PLAN_FILE (not imported: that module needs torch)
PROBE_CACHE_FILE = "estimate-probes.json"
FEATURE_SHARE_MAX = 0.45  # training.feature_pass.FEATURE_SHARE_MAX (not imported: that module needs torch)
#: A probe older than this is repeated (a shared machine's load changes over hours).
PROBE_MAX_AGE_S = 6 * 3600.0
_probe_lock = threading.Lock()  # one probe at a time: two at once would each measure half a machine


@dataclass
class Estimate:
    backbone: str
    resolution: int
    images: int  # images to featurize now (those whose features are not cached yet)
    feature_seconds: float  # overhead_seconds + images / feature_rate
    budget_s: float
    cached_images: int = 0
    feature_method: str = ""
    feature_rate: float = 0.0  # images/s expected for the pass itself
    overhead_seconds: float | None = None  # export + session start (None: not known, not included)
    overhead_parts: dict[str, float] | None = None  # the probe's setup_s, warmup_s and write_s
    speed_source: str = "reference"  # probe | probe_cached | run | reference
    trials: list[dict[str, Any]] = field(default_factory=list)
    trials_note: str | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    accuracy_method: str = ""
    validation_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Timing:
    """A probe's result (see ``estimate_probe.ProbeTiming``), fresh or from the cache."""

    probe: ProbeTiming
    measured_at: float  # time.time()
    cached: bool

    @property
    def overhead_s(self) -> float:
        return self.probe.overhead_s

    @property
    def rate(self) -> float:
        return self.probe.rate

    @property
    def images(self) -> int:
        return self.probe.images


@dataclass(frozen=True)
class RunSpeed:
    """What an earlier completed run measured (its plan.json)."""

    run_id: str
    speed: float  # measured / reference rate, overhead included (as the trainer records it)
    feature_size: int | None
    feature_seconds: float | None


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
    probe: bool = True,
) -> Estimate:
    """What the trainer will do with this data and budget (see the module docstring).

    ``probe``: whether a live probe may run when no cached one fits (False: cached or reference only).

    Raises:
        WeightsError / BackboneNotFoundError: no backbone can be used (as training would fail).
    """
    from ..training.backbones import get_backbone_spec
    from ..training.plan import choose_backbone, feature_rate, make_plan

    labels = len(preview.labels)
    images = preview.images
    num_val = _validation_count(images, validation_fraction, labels)
    facts = _data_facts(preview, images - num_val, num_val)
    backbone = choose_backbone(architecture, None)
    spec = get_backbone_spec(backbone)
    run = _measured_speed(session, backbone, fingerprint)
    # The trainer's first plan uses the reference rates; only a pass over PROBE_MIN_MISSING uncached
    # images or more is re-planned with a measured rate (feature_pass.calibrate). The resolution follows
    # that rule here, so the time is estimated for the resolution the trainer will use.
    plan = make_plan(backbone, facts, images, budget_s)
    counted_at = plan.feature_size
    cached = _cached_features(backbone, counted_at, preview.hashes)
    todo = images - cached
    calibrates = todo >= _probe_min_missing()
    paths = sample_paths([preview.path / rel for rel in preview.usable])
    source_class = _source_class(preview.typical_size)
    timing, why_not, used_run, scale = None, "", run, run.speed if run else 1.0
    for _ in range(2):  # a measured rate may move the trainer to another resolution: time that one too
        timing, why_not = _timing(plan, budget_s, paths, source_class, probe)
        if timing is None:
            break
        measured = _run_scale(run, plan.feature_size, timing.overhead_s) if run else None
        used_run = run if measured is not None else None
        scale = measured if measured is not None else timing.rate / feature_rate(spec, plan.feature_size)
        replanned = make_plan(backbone, facts, todo, budget_s, rate_scale=scale)  # as calibrate does
        if not calibrates or replanned.feature_size == plan.feature_size:
            break
        plan = replanned
    if timing is None and calibrates:
        plan = make_plan(backbone, facts, todo, budget_s, rate_scale=scale)
    if plan.feature_size != counted_at:  # the cached features counted were another resolution's
        cached = _cached_features(backbone, plan.feature_size, preview.hashes)
        todo = images - cached
    plan.speed = scale
    plan.feature_rate = feature_rate(spec, plan.feature_size, scale)
    if calibrates:  # when even the lowest resolution is too slow, the trainer subsamples (train_limit)
        limit = int(FEATURE_SHARE_MAX * budget_s * plan.feature_rate)
        if images > limit:
            todo = min(todo, max(labels * 2, limit - num_val) + num_val)
    plan.feature_seconds = todo / plan.feature_rate
    # Nothing to compute (all cached): the trainer still exports and starts a session, but runs no batch
    # and writes nothing.
    overhead = None if timing is None else timing.overhead_s if todo else timing.probe.setup_s
    seconds = plan.feature_seconds + (overhead or 0.0)
    plan.feature_seconds = seconds
    estimate = Estimate(backbone, plan.feature_size, todo, round(seconds, 6), budget_s, cached_images=cached,
                        validation_images=num_val, feature_rate=round(plan.feature_rate, 3),
                        overhead_seconds=None if overhead is None else round(overhead, 3))
    if timing is not None:
        estimate.overhead_parts = {"setup_s": round(timing.probe.setup_s, 3),
                                   "warmup_s": round(timing.probe.warmup_s, 3) if todo else 0.0,
                                   "write_s": round(timing.probe.write_s, 3) if todo else 0.0}
    estimate.speed_source, estimate.feature_method = _method(plan, used_run, timing, why_not, cached)
    _trial_estimates(plan, estimate, budget_s)
    _accuracy_band(session, estimate, fingerprint)
    return estimate


def _data_facts(preview: Preview, num_train: int, num_val: int) -> DataFacts:
    """The plan's facts as the trainer measures them (``trainer.data_facts``: the median shorter side and
    the usual channel count, e.g. 1 for greyscale, which changes the from-scratch CNN's cost), with the
    split's counts."""
    from ..training.plan import DataFacts

    side = min(preview.typical_size) if preview.typical_size[0] else 224
    fallback = DataFacts(num_train, num_val, side, 3, len(preview.labels))
    if not preview.items:
        return fallback
    try:
        from ..training.trainer import data_facts
    except ImportError:  # without torch nothing is trained here: the preview's median size will do
        return fallback
    measured = data_facts(preview.items, [], preview.labels)
    return dataclasses.replace(measured, num_train=num_train, num_val=num_val)


def _method(plan: Plan, run: RunSpeed | None, timing: Timing | None, why_not: str,
            cached: int) -> tuple[str, str]:
    """Where the estimate's speed came from (speed_source) and the sentence the page shows about it."""
    rate = f"{plan.feature_rate:.0f} images/s for {plan.backbone} at {plan.feature_size} px"
    if timing is not None:
        age = time.time() - timing.measured_at
        when = "just now" if age < 90 else f"{age / 60:.0f} minutes ago"
        probe = (f"a probe that featurized {timing.images} of these images through the trainer's own code "
                 f"path on this machine ({when})")
        parts = timing.probe
        overhead = (f" plus {timing.overhead_s:.1f}s fixed (ONNX export of the backbone and onnxruntime "
                    f"start {parts.setup_s:.1f}s, first-batch warm-up {parts.warmup_s:.1f}s, writing the "
                    f"feature cache {parts.write_s:.1f}s; measured by {probe if run else 'the same probe'})")
        if run is not None:
            source = "run"
            text = f"{rate}, the speed measured by run {run.run_id[:8]} on this machine,{overhead}"
        else:
            source = "probe_cached" if timing.cached else "probe"
            text = f"{rate}, measured by {probe},{overhead}"
    elif run is not None:
        source = "run"
        text = (f"{rate}, from this machine's speed as measured by run {run.run_id[:8]} ({run.speed:.2f}x "
                f"the backbone's reference rates); the fixed export/session-start time is not included "
                f"({why_not})")
    else:
        source = "reference"
        text = (f"{rate}, from the backbone's reference rates for this machine's cores (not measured here: "
                f"{why_not}); the fixed export/session-start time is not included, so the pass may take "
                "longer")
    cached_note = f"; {cached} images have cached features from earlier runs." if cached else "."
    return source, f"Estimated as the trainer's feature pass: {text}{cached_note}"


def _plan_trials(plan: Plan, budget_s: float) -> None:
    """The trials the trainer would plan before its feature pass (``Search._replan``), into ``plan``."""
    from ..training.plan import PlannedTrial, apply_estimates
    from ..training.registry import get_trial, known_trial_names

    plan.trials = [PlannedTrial(name) for name in known_trial_names()]
    left = max(0.0, budget_s - plan.feature_seconds)
    apply_estimates(plan, [(t.name, get_trial(t.name).estimate(plan, left)) for t in plan.trials], left)


def _trial_estimates(plan: Plan, estimate: Estimate, budget_s: float) -> None:
    try:
        _plan_trials(plan, budget_s)
        estimate.trials = [
            {"name": t.name, "status": t.status, "budget_s": round(t.budget_s, 1),
             "image_size": t.image_size, "epochs": t.epochs}
            for t in plan.trials
        ]
    except (ImportError, MissingDependencyError) as exc:  # the portal may run without the [train] extra
        estimate.trials_note = f"Trial estimates need the training extra ({exc}); the run plans them itself."


def _outputs(plan: Plan, budget_s: float) -> tuple[str, ...]:
    """The arrays the trainer's feature pass would compute for this plan (``Search._needs`` at the start:
    those of the trials it plans to run; a trial dropped for lack of time gets none)."""
    from ..training.feature_pass import ARRAYS
    from ..training.registry import get_trial

    planned = dataclasses.replace(plan, trials=[])
    _plan_trials(planned, budget_s)
    needs: set[str] = set()
    for trial in planned.trials:
        if trial.status == "planned":
            needs |= set(get_trial(trial.name).needs)
    return tuple(name for name in ARRAYS if name in needs) or ("features",)


def _source_class(typical_size: tuple[int, int]) -> str:
    """The images' size class for the probe cache: decoding cost grows with the source's pixels, so a probe
    of 28 px images says nothing about 4000 px photos (classes are a factor of 2 in pixels apart)."""
    pixels = max(1, typical_size[0] * typical_size[1])
    return f"src{round(math.log2(pixels))}"


def _timing(plan: Plan, budget_s: float, paths: list[Path], source_class: str,
            probe: bool) -> tuple[Timing | None, str]:
    """The cached probe for this plan's pass, else a new probe (when allowed). (None, why) when neither."""
    try:
        outputs = _outputs(plan, budget_s)
    except (ImportError, MissingDependencyError) as exc:
        return None, f"the training extra is not installed: {exc}"
    key = "|".join([socket.gethostname(), str(os.cpu_count()), plan.backbone, str(plan.feature_size),
                    str(plan.scratch_pool), "+".join(outputs), source_class])
    with _probe_lock:
        found = _read_probe(key)
        if found is not None:
            return found, ""
        if not probe:
            return None, "no probe has measured it yet"
        if not paths:
            return None, "no usable images to probe with"
        try:
            timed = _run_probe(plan.backbone, plan.feature_size, plan.scratch_pool, outputs, paths)
        except ProbeFailed as exc:  # an estimate must not fail on its probe
            logger.warning("Feature-pass probe failed: %s", exc)
            return None, str(exc)
        found = Timing(timed, time.time(), cached=False)
        _write_probe(key, found)
        return found, ""


class ProbeFailed(Exception):
    """The probe could not measure (the message says why, for the page)."""


PROBE_TIMEOUT_S = 180.0


def _run_probe(backbone: str, size: int, pool: int | None, outputs: tuple[str, ...],
               paths: list[Path]) -> ProbeTiming:
    """``estimate_probe.time_pass`` in a fresh Python process, as the trainer's worker is (a process that
    already exported a model or decoded these images would measure a warmer pass than the trainer's).

    Raises: ProbeFailed.
    """
    request = json.dumps({"backbone": backbone, "size": size, "pool": pool, "outputs": list(outputs),
                          "paths": [str(p) for p in paths]})
    try:
        done = subprocess.run([sys.executable, "-m", "modelbuilder.portal.estimate_probe"], input=request,
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeFailed(f"the probe did not finish: {exc}") from exc
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise ProbeFailed(f"the probe failed: {tail[0]}") from None
    if "error" in answer:
        raise ProbeFailed(str(answer["error"]))
    return _probe_timing(answer)


def _probe_timing(entry: dict[str, Any]) -> ProbeTiming:
    """Raises: KeyError, TypeError, ValueError for a malformed entry."""
    return ProbeTiming(setup_s=float(entry["setup_s"]), warmup_s=float(entry["warmup_s"]),
                       write_s=float(entry["write_s"]), rate=float(entry["rate"]),
                       images=int(entry["images"]))


def _probe_min_missing() -> int:
    try:
        from ..training.feature_pass import PROBE_MIN_MISSING
    except ImportError:  # without the training extra: the value it has there
        return 1500
    return PROBE_MIN_MISSING


def _probe_cache() -> Path:
    return settings.cache_dir() / PROBE_CACHE_FILE


def _read_probe(key: str) -> Timing | None:
    try:
        entry = json.loads(_probe_cache().read_text(encoding="utf-8")).get(key)
        if not isinstance(entry, dict) or time.time() - float(entry["measured_at"]) > PROBE_MAX_AGE_S:
            return None
        return Timing(_probe_timing(entry), float(entry["measured_at"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_probe(key: str, timing: Timing) -> None:
    path = _probe_cache()
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        entries = entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = {**timing.probe.to_dict(), "measured_at": timing.measured_at}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True))
    except OSError as exc:  # next estimate probes again; not worth failing this one
        logger.warning("Could not cache the feature-pass probe in %s: %s", path, exc)


#: Completed runs looked at for a measured speed (newest first).
SPEED_HISTORY = 20


def _measured_speed(session: WorkspaceSession, backbone: str, fingerprint: str | None) -> RunSpeed | None:
    """The feature-pass speed (measured / reference rate) that the newest completed run of this backbone on
    the same data (``fingerprint``) measured on a large enough pass (its plan.json ``speed``; 1.0: it did
    not measure). Runs on other data decoded other images (other sizes, other formats), so their speed
    says little about these; without a fingerprint no run is used."""
    if fingerprint is None:
        return None
    try:
        runs = run_service.list_runs(session, statuses=[RunStatus.COMPLETED], limit=SPEED_HISTORY)
    except ModelBuilderError:
        return None
    for run in runs:
        if run.dataset_fingerprint != fingerprint:
            continue
        try:
            path = artifact_service.artifact_path(session, run.id, PLAN_FILE)
            plan = json.loads(path.read_text(encoding="utf-8"))
        except (ModelBuilderError, OSError, ValueError):
            continue
        if not isinstance(plan, dict) or plan.get("backbone") != backbone:
            continue
        speed = plan.get("speed")
        if isinstance(speed, (int, float)) and speed > 0 and speed != 1.0:
            size, seconds = plan.get("feature_size"), plan.get("feature_seconds")
            return RunSpeed(run.id, float(speed), size if isinstance(size, int) else None,
                            float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None)
    return None


def _run_scale(run: RunSpeed, size: int, overhead_s: float) -> float | None:
    """The run's speed without the fixed overhead its recorded pass included (the trainer divides all of
    the pass's time by the images), at this resolution; None when it cannot be corrected here."""
    if run.feature_size != size:
        return run.speed  # another resolution: the overhead measured now is not the one it paid
    if run.feature_seconds is None:
        return run.speed
    if run.feature_seconds <= overhead_s * 1.1:  # the run was mostly overhead: its rate says little
        return None
    return run.speed * run.feature_seconds / (run.feature_seconds - overhead_s)


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
