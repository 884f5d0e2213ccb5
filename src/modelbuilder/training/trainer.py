"""The time-budgeted training run: scan -> plan -> features -> trials -> export the best -> outputs.

``run_training`` is what every compute backend calls (in-process, in a worker process, on a Ray
worker). It never touches the workspace store: everything it has to say goes through the Reporter,
the plan included (``plan.json``, re-published whenever it changes).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data import DataIssue, Dataset, ImageItem, scan_dataset, split_dataset
from ..fileio import atomic_write_text
from ..pipeline.preprocess import preprocess
from .checkpoint import CheckpointDir, FinishedTrial
from .config import TrainingConfig, TrainingResult, TrialSummary
from .devices import DeviceStrategy, default_strategy
from .distributed import SINGLE, DistributedContext
from .evaluation import selection_rank
from .feature_pass import subsample_stratified  # re-exported: tests and benchmarks import it from here
from .finalize import finalize_outputs
from .onnx_export import check_parity, export_onnx
from .plan import DataFacts, Plan, choose_backbone
from .reporter import Reporter
from .search import Search
from .trials.base import TrialOutcome

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


class Clock:
    """Seconds used and left of the budget (``now`` is injectable: tests simulate a slow machine)."""

    def __init__(self, budget: float, used_before: float = 0.0,
                 now: Callable[[], float] | None = None) -> None:
        self.now = now or time.monotonic
        self.start = self.now()
        self.budget = budget
        self.used_before = used_before
        self.save_seconds = 0.0  # the slowest trial export + parity check seen so far

    def elapsed(self) -> float:
        return self.used_before + self.now() - self.start

    def left(self, saves_to_come: int = 1) -> float:
        """Seconds a trial may still train, keeping what its own export, an ensemble export and the
        final outputs will take (measured on this machine's earlier exports) inside the budget."""
        reserve = min(max(1.0, 0.03 * self.budget), 20.0) + (saves_to_come + 2) * self.save_seconds
        return self.budget - reserve - self.elapsed()


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
    """Every skipped file is logged, other problems up to ``per_kind`` per kind; notes (files converted
    or rotated, then used) get one line per kind with an example: the scan's summary line counts them."""
    by_kind: dict[str, list[DataIssue]] = {}
    for issue in issues:
        by_kind.setdefault(f"{issue.kind}/{issue.action}", []).append(issue)
    for kind, group in sorted(by_kind.items()):
        if group[0].is_note:
            reporter.log(f"data: note [{kind}] {len(group)} file{'s' if len(group) != 1 else ''}, "
                         f"e.g. {group[0].message}")
            continue
        shown = group if group[0].action == "skipped" else group[:per_kind]
        for issue in shown:
            reporter.log(f"data: [{kind}] {issue.message}")
        if len(group) > len(shown):
            reporter.log(f"data: [{kind}] ... and {len(group) - len(shown)} more like this")


def data_facts(train_items: list[ImageItem], val_items: list[ImageItem], labels: list[str]) -> DataFacts:
    """What the plan is made from: counts, the median shorter side, the usual channel count."""
    from PIL import Image

    def bands(mode: str) -> int:
        try:
            return Image.getmodebands(mode)
        except ValueError:
            return 3

    side = int(np.median([min(i.width, i.height) for i in train_items])) if train_items else 0
    channels = int(np.median([bands(i.mode) for i in train_items])) if train_items else 3
    return DataFacts(len(train_items), len(val_items), side, channels, len(labels))


class PlanPublisher:
    """Writes ``plan.json`` into the work folder and reports it (and a log line) when it changes."""

    def __init__(self, reporter: Reporter, work_dir: Path) -> None:
        self.reporter, self.path, self._last = reporter, work_dir / PLAN_FILE, ""

    def __call__(self, plan: Plan) -> None:
        text = json.dumps(plan.to_dict(), indent=1)
        if text == self._last:
            return
        self._last = text
        atomic_write_text(self.path, text)
        self.reporter.log(f"plan (revision {plan.revision}): {plan.describe()}")
        self.reporter.artifact(self.path, PLAN_FILE)


def save_trial(outcome: TrialOutcome, labels: list[str], val_items: list[ImageItem],
               checkpoints: CheckpointDir, clock: Clock) -> FinishedTrial:
    """Export the trial's model, prove ONNX parity on real validation images, and checkpoint it."""
    from ..pipeline.onnx_metadata import onnx_metadata_props

    started = clock.now()
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
    clock.save_seconds = max(clock.save_seconds, clock.now() - started)
    return finished


def _rank(trial: FinishedTrial, checkpoints: CheckpointDir, y_val: np.ndarray) -> tuple[float, bool, float]:
    """The trial's recorded validation accuracy, then an ensemble kept for a saturated tie, then its
    validation log loss (``evaluation.selection_rank``)."""
    return selection_rank(trial.val_accuracy, trial.params, y_val, checkpoints.probabilities(trial))


def run_training(config: TrainingConfig, reporter: Reporter, work_dir: Path, *,
                 checkpoint_dir: Path | None = None, strategy: DeviceStrategy | None = None,
                 clock: Clock | None = None, distributed: DistributedContext = SINGLE,
                 threads: int | None = None) -> TrainingResult:
    """Train within ``config.time_budget`` seconds (or replay ``config.replay_plan``) and write the
    outputs, ``plan.json`` included, into ``work_dir``.

    ``strategy`` is where gradient training runs (default: a CUDA device if there is one, else the
    CPU); ``clock`` is injectable for tests. In a data-parallel run every worker calls this with its
    ``distributed`` context and a ``DataParallelStrategy``: rank 0 plans, reports, exports and writes
    the outputs; the other ranks only take the same gradient steps (give them a silent reporter and a
    work folder of their own) and return a result without outputs. ``threads``: torch's CPU threads
    (default: every core; a worker gets its share).

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
    clock = clock or Clock(config.time_budget, checkpoints.elapsed)
    clock.used_before = checkpoints.elapsed
    if checkpoints.trials:
        reporter.log(f"Resuming: {len(checkpoints.trials)} finished trial(s), "
                     f"{checkpoints.elapsed:.0f}s of the budget already used")
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    try:
        dataset, train_items, val_items, validation = _scan(config, reporter)
        labels = dataset.labels
        index = {label: i for i, label in enumerate(labels)}
        y_train = np.array([index[i.label] for i in train_items], dtype=np.int64)
        y_val = np.array([index[i.label] for i in val_items], dtype=np.int64)
        facts = data_facts(train_items, val_items, labels)
        backbone_name = (str(config.replay_plan["backbone"]) if config.replay_plan
                         else choose_backbone(config.architecture, config.weights))
        publish = PlanPublisher(reporter, work_dir)
        search = Search(config, reporter, labels, checkpoints, clock, strategy or default_strategy(),
                        publish, save_trial, distributed)
        plan = search.initial_plan(backbone_name, facts)
        reporter.log(f"plan: {plan.describe()}; budget {config.time_budget:.0f}s"
                     + (" (replaying a recorded plan: bounded by steps, not time)" if plan.replay else ""))
        canceled = search.run(plan, train_items, val_items, y_train, y_val)
        if distributed.distributed:
            _report_ranks(reporter, distributed, search.steps)
            if not distributed.is_main:
                return TrainingResult(0.0, 0.0, backbone_name, "none", labels, clock.elapsed(), work_dir, {},
                                      [], [], {}, canceled=canceled, plan=None)
        files_extra = {PLAN_FILE: publish.path} if publish.path.is_file() else {}
        finished = [t for t in checkpoints.trials if t.val_accuracy >= 0]
        if not finished:
            reporter.log("Canceled before any trial finished: no model to keep.")
            return TrainingResult(0.0, 0.0, backbone_name, "none", labels, clock.elapsed(), work_dir,
                                  files_extra, [], _skipped(dataset, validation), {}, canceled=True,
                                  plan=search.plan.to_dict() if search.plan else None)
        best = max(finished, key=lambda t: _rank(t, checkpoints, y_val))
        reporter.phase("export", f"Exporting {best.strategy} ({best.val_accuracy:.2%})")
        evaluation, files = finalize_outputs(
            config, reporter, work_dir, best, checkpoints, labels, val_items, y_val,
            _skipped(dataset, validation),
        )
        files.update(files_extra)
        trials = [TrialSummary(t.name, t.strategy, t.backbone, int(t.preprocessing["crop_size"]),
                               t.val_accuracy, t.seconds, "Canceled" if t.canceled else "Completed",
                               t.params) for t in checkpoints.trials]
        return TrainingResult(
            accuracy=float(evaluation["accuracy"]), macro_accuracy=float(evaluation["macro_accuracy"]),
            backbone=best.backbone, strategy=best.strategy, labels=labels, seconds=clock.elapsed(),
            output_dir=work_dir, files=files, trials=trials, skipped_images=_skipped(dataset, validation),
            evaluation=evaluation, canceled=canceled,
            plan=search.plan.to_dict() if search.plan else None,
        )
    finally:
        if temp_checkpoints:
            checkpoints.remove()


def _report_ranks(reporter: Reporter, distributed: DistributedContext, steps: int) -> None:
    """The run's world size and each rank's gradient steps, as run metrics (rank 0 reports; equal counts
    show that every worker took part in every step)."""
    counts = distributed.gather(steps)
    reporter.metric("world_size", distributed.world_size)
    for rank, count in enumerate(counts):
        reporter.metric(f"steps_rank_{rank}", count)
    reporter.log(f"data-parallel: {distributed.world_size} workers, gradient steps per rank {counts}")


def _skipped(dataset: Dataset, validation: Dataset | None) -> list[dict[str, str]]:
    issues = dataset.skipped() + (validation.skipped() if validation else [])
    return [{"path": i.path, "kind": i.kind, "message": i.message} for i in issues]

__all__ = ["Clock", "PLAN_FILE", "data_facts", "run_training", "save_trial", "subsample_stratified"]
