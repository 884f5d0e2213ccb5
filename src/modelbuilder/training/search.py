"""The search: make the plan, run the feature pass, then the planned trials in order, re-planning
before each from the time actually left. A replay runs a recorded plan's trials bounded by their
recorded steps instead."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import ImageItem
from .backbones import create_backbone, get_backbone_spec, split_backbone
from .checkpoint import CheckpointDir, FinishedTrial
from .config import TrainingConfig
from .devices import DeviceStrategy
from .distributed import SINGLE, DistributedContext
from .feature_pass import BackboneParts, calibrate, extract, subsample_stratified, train_limit
from .plan import (
    EXECUTED,
    PENDING,
    DataFacts,
    Plan,
    PlannedTrial,
    apply_estimates,
    feature_rate,
    make_plan,
)
from .registry import Trial, get_trial, known_trial_names
from .reporter import Reporter
from .trials.base import TrialContext, TrialOutcome
from .weights import find_weights

if TYPE_CHECKING:
    from .trainer import Clock

#: A feature pass over at least this many images measures the machine's speed for the plan.
SPEED_SAMPLE = 200

#: What rank 0's feature pass gives every rank: the plan, the training images used and their labels, the
#: cached arrays (None: canceled), the images computed and the seconds it took.
FeaturePass = tuple[dict[str, Any], list[ImageItem], np.ndarray, "dict[str, np.ndarray] | None", int, float]

SaveTrial = Callable[[TrialOutcome, list[str], list[ImageItem], CheckpointDir, "Clock"], FinishedTrial]


class Search:
    """One run's search. ``plan`` is the current plan (also after the search, with what executed).

    In a data-parallel run (``distributed``) every rank runs the search; rank 0 alone calibrates,
    computes the features, re-plans and decides each next trial, and shares the outcome, so that all
    ranks run the same trials with the same steps. ``steps`` counts this rank's gradient steps.
    """

    def __init__(self, config: TrainingConfig, reporter: Reporter, labels: list[str],
                 checkpoints: CheckpointDir, clock: Clock, strategy: DeviceStrategy,
                 publish: Callable[[Plan], None], save: SaveTrial,
                 distributed: DistributedContext = SINGLE) -> None:
        self.config, self.reporter, self.labels = config, reporter, labels
        self.checkpoints, self.clock, self.strategy = checkpoints, clock, strategy
        self.publish, self.save = publish, save
        self.distributed = distributed
        self.plan: Plan | None = None
        self.replay_records: dict[str, dict[str, Any]] = {}
        self.steps = 0

    def selected_trials(self) -> list[str]:
        """The registered trials this run may try, in run order."""
        chosen = self.config.strategies
        return [n for n in known_trial_names() if not chosen or n in chosen]

    def initial_plan(self, backbone: str, facts: DataFacts) -> Plan:
        """The plan before the feature pass: from the data's facts, or the recorded plan to replay."""
        if self.config.replay_plan:
            recorded = Plan.from_dict(self.config.replay_plan)
            self.replay_records = {t.name: t.record for t in recorded.trials if t.status in EXECUTED}
            for name in self.replay_records:
                get_trial(name)  # an unknown trial fails before any work
            if recorded.data != facts:
                self.reporter.log(f"replay: the data differs from the recorded run's ({facts} now, "
                                  f"{recorded.data} then); accuracy may differ")
            trials = [PlannedTrial(t.name, budget_s=t.budget_s, image_size=t.image_size,
                                   batch_size=t.batch_size, epoch_seconds=t.epoch_seconds, epochs=t.epochs)
                      for t in recorded.trials if t.name in self.replay_records]
            self.plan = dataclasses.replace(recorded, trials=trials, revision=0, replay=True)
        else:
            self.plan = make_plan(backbone, facts, facts.num_train + facts.num_val, self.config.time_budget)
            self.plan.device = self.strategy.name
            self.plan.trials = [PlannedTrial(name) for name in self.selected_trials()]
        return self.plan

    def run(self, plan: Plan, train_items: list[ImageItem], val_items: list[ImageItem], y_train: np.ndarray,
            y_val: np.ndarray) -> bool:
        """Feature pass, then the trials. Returns True if canceled."""
        config, reporter = self.config, self.reporter
        spec = get_backbone_spec(plan.backbone)
        backbone = create_backbone(plan.backbone, pretrained=True, weights=config.weights).eval()
        stem, tail, stride = split_backbone(plan.backbone, backbone, plan.feature_size)
        source = find_weights(spec, config.weights)
        weights_id = "random" if source is None or source.path is None else \
            f"{source.path.name}:{source.path.stat().st_size}"
        parts = BackboneParts(backbone, stem, tail, stride, weights_id)
        shared: FeaturePass | None = None
        if self.distributed.is_main:
            shared = self._features(plan, parts, train_items, val_items, y_train)
        received = self.distributed.share(shared)
        assert received is not None  # ranks > 0 pass None and receive rank 0's value
        plan_data, train_items, y_train, arrays, computed, seconds = received
        if not self.distributed.is_main:
            self.plan = Plan.from_dict(plan_data)
        assert self.plan is not None  # calibrate may have replaced the plan object
        plan = self.plan
        if arrays is None:
            return True
        items = train_items + val_items
        rate = f", {computed / seconds:.0f} images/s" if computed else ""
        reporter.log(f"features: {len(items)} images ({computed} computed, {len(items) - computed} from "
                     f"cache) in {seconds:.1f}s{rate}")
        if computed:
            images_per_second = computed / max(seconds, 1e-6)
            reporter.metric("feature_images_per_second", images_per_second)
            # Only enough images say how fast we are now: a pass over a few dozen is mostly start-up,
            # and the trials' estimates (epochs of the partial fine-tune) would follow its low rate.
            if computed >= SPEED_SAMPLE and not plan.replay:
                plan.feature_rate = round(images_per_second, 1)
                plan.speed = round(images_per_second / feature_rate(spec, plan.feature_size), 3)
        plan.feature_seconds = round(seconds, 2)
        return self._trials(plan, parts, arrays, len(train_items), y_train, y_val, val_items)

    def _features(self, plan: Plan, parts: BackboneParts, train_items: list[ImageItem],
                  val_items: list[ImageItem], y_train: np.ndarray) -> FeaturePass:
        """Calibrate, subsample to the budget and compute the cached arrays (rank 0 only): the plan,
        the training images used, their labels, the arrays (None when canceled), images computed and
        the seconds it took."""
        config, reporter = self.config, self.reporter
        with tempfile.TemporaryDirectory() as tmp:
            if not plan.replay:
                plan, measured = calibrate(plan, parts, train_items + val_items, reporter, Path(tmp))
                self.plan = plan
                if measured:  # the pass may still be too long for the budget
                    plan.train_limit = train_limit(plan, len(train_items) + len(val_items), len(val_items),
                                                   len(self.labels), self.clock.left())
            if plan.train_limit is not None and len(train_items) > plan.train_limit:
                reporter.log(f"features: {len(train_items)} training images would take "
                             f"{plan.feature_seconds:.0f}s at {plan.feature_rate:.0f} images/s; using a "
                             f"stratified {plan.train_limit} of them to stay within the time budget (give "
                             "more --time to use all)")
                train_items, y_train = subsample_stratified(train_items, y_train, plan.train_limit,
                                                            config.seed)
            plan.train_images = len(train_items)
            if not plan.replay:
                self._replan(plan)
            needs = self._needs(plan, at_start=True)
            self.publish(plan)
            items = train_items + val_items
            reporter.phase("features", f"Computing {plan.backbone} features at {plan.feature_size}px")
            started = time.monotonic()
            try:
                arrays: dict[str, np.ndarray] | None
                arrays, computed = extract(plan, parts, items, needs, reporter, Path(tmp))
            except InterruptedError:
                arrays, computed = None, 0
        return plan.to_dict(), train_items, y_train, arrays, computed, time.monotonic() - started

    def _needs(self, plan: Plan, at_start: bool = False) -> set[str]:
        """The cached arrays of the trials still to run (that apply to this data).

        ``at_start`` (the feature pass): only those of trials the plan means to run. A trial dropped
        for lack of time gets no arrays (the stem activations of 60k images are ~0.7 GB); should a later
        re-plan bring it back, it is skipped (see ``_trials``).
        """
        needs: set[str] = set()
        for planned in plan.trials:
            if planned.status not in PENDING:
                continue
            if at_start and not plan.replay and planned.status != "planned":
                continue
            trial = get_trial(planned.name)
            if plan.replay or at_start or trial.estimate(plan, self.clock.left()) is not None:
                needs |= set(trial.needs)
        return needs

    def _replan(self, plan: Plan) -> None:
        pending = [t for t in plan.trials if t.status in PENDING]
        left = self.clock.left(saves_to_come=max(1, min(2, len(pending))))
        estimates = [(t.name, get_trial(t.name).estimate(plan, left)) for t in pending]
        apply_estimates(plan, estimates, left)

    def _trials(self, plan: Plan, parts: BackboneParts, arrays: dict[str, np.ndarray], num_train: int,
                y_train: np.ndarray, y_val: np.ndarray, val_items: list[ImageItem]) -> bool:
        config, reporter = self.config, self.reporter
        outcomes: dict[str, TrialOutcome] = {}
        feature_spec = get_backbone_spec(plan.backbone).preprocessing(plan.feature_size)
        for planned in plan.trials:
            action = self._next(plan, planned) if self.distributed.is_main else None
            action = self.distributed.share(action)
            self.distributed.sync_plan(plan)
            if action == "stop":
                break
            if action != "run":
                continue
            missing = set(get_trial(planned.name).needs) - set(arrays)
            if missing:  # dropped when the feature pass ran, so its arrays were not computed
                planned.status, planned.budget_s, planned.epochs = "dropped", 0.0, 0.0
                reporter.log(f"{planned.name}: not run, the feature pass did not compute "
                             f"{', '.join(sorted(missing))} for it (it did not fit in the plan then)")
                continue
            ctx = TrialContext(config, reporter, plan, planned, self.labels, arrays, num_train, y_train,
                               y_val, parts.backbone, parts.stem, parts.tail, feature_spec, outcomes,
                               self.strategy, self.clock.left, self.replay_records.get(planned.name))
            self._run_one(get_trial(planned.name), ctx, val_items)
            for name in set(arrays) - self._needs(plan):
                del arrays[name]  # free the largest arrays as soon as no trial to come needs them
        self.distributed.sync_plan(plan)
        self.publish(plan)
        return self.distributed.share(reporter.should_stop())

    def _next(self, plan: Plan, planned: PlannedTrial) -> str:
        """What to do with ``planned`` now (rank 0 decides for all): "stop", "skip" or "run"."""
        config, reporter = self.config, self.reporter
        if reporter.should_stop():
            return "stop"
        if planned.status not in PENDING:
            return "skip"
        if (done := self.checkpoints.done(planned.name)) is not None:
            reporter.log(f"{planned.name}: already finished before resume ({done.val_accuracy:.4f})")
            planned.status, planned.val_accuracy = "resumed", done.val_accuracy
            return "skip"
        if len(self.checkpoints.trials) >= (config.max_trials or 99):
            planned.status = "max_trials"
            return "skip"
        if not plan.replay:
            self._replan(plan)
        self.publish(plan)
        if planned.status != "planned":
            if planned.status == "dropped":
                reporter.log(f"{planned.name}: not run, it does not fit in the time left")
            return "skip"
        return "run"

    def _run_one(self, trial: Trial, ctx: TrialContext, val_items: list[ImageItem]) -> None:
        """Run one trial as a child run; export, check and checkpoint its model; record what it did."""
        reporter, planned, name = self.reporter, ctx.planned, ctx.planned.name
        # A trial that only combines others (the ensemble) is reported only when it yields a model.
        quiet = bool(getattr(trial, "report_only_outcome", False))
        params = {"backbone": ctx.plan.backbone, "image_size": planned.image_size or ctx.plan.feature_size,
                  "budget_s": planned.budget_s, "batch_size": planned.batch_size,
                  "planned_epochs": planned.epochs}
        if self.distributed.distributed:
            params["world_size"] = self.distributed.world_size
        if not quiet:
            reporter.phase("trial", name)
            reporter.trial_started(name, params)
        try:
            outcome = trial.run(ctx)
        except Exception:
            planned.status = "failed"
            if not quiet:
                reporter.trial_ended(name, "Failed", {})
            self.publish(ctx.plan)
            raise
        if outcome is None:
            planned.status = "skipped"
            if not quiet:
                reporter.trial_ended(name, "Completed", {})
            return
        if quiet:
            reporter.phase("trial", name)
            reporter.trial_started(name, {**params, **outcome.params})
        self.steps += int(outcome.record.get("steps", 0))
        if self.distributed.is_main:  # only rank 0 exports and checkpoints
            self.save(outcome, self.labels, val_items, self.checkpoints, self.clock)
        ctx.outcomes[name] = outcome
        status = "Canceled" if outcome.canceled else "Completed"
        reporter.trial_ended(name, status, {"val_accuracy": outcome.val_accuracy, "seconds": outcome.seconds})
        reporter.log(f"{name}: val_accuracy={outcome.val_accuracy:.4f} in {outcome.seconds:.1f}s")
        planned.status = status.lower()
        planned.seconds, planned.val_accuracy = round(outcome.seconds, 3), outcome.val_accuracy
        planned.seed, planned.record = ctx.seed, dict(outcome.record)
