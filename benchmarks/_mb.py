"""Train with modelbuilder (``run_training``, in this process) and test the shipped MLModel.zip."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import TimingReporter, accuracy_metrics, fresh_dir, isolated_home

logger = logging.getLogger("benchmarks")

_FEATURES_LINE = re.compile(r"features: (\d+) images \((\d+) computed, (\d+) from cache\) in ([\d.]+)s")
_PROBE_LINE = re.compile(
    r"features: measured (\d+) images/s at (\d+)px \(([\d.]+)x the expected rate\) -> (\d+)px")


def features_summary(reporter: TimingReporter) -> dict[str, Any]:
    """What the trainer's feature phase did, parsed from its log line and metric."""
    summary: dict[str, Any] = {}
    for line in reporter.log_lines():
        if match := _FEATURES_LINE.search(line):
            total, computed, cached, seconds = match.groups()
            summary.update(images=int(total), computed=int(computed), from_cache=int(cached),
                           extraction_seconds=float(seconds))
        elif match := _PROBE_LINE.search(line):
            rate, size, scale, chosen = match.groups()
            summary["probe"] = {"images_per_second": int(rate), "size": int(size), "scale": float(scale),
                                "chosen_size": int(chosen)}
        elif line.startswith("plan: "):
            summary["plan"] = line[len("plan: "):]
    rates = reporter.metrics("feature_images_per_second")
    if rates:
        summary["images_per_second"] = round(rates[-1], 1)
    return summary


def train_and_test(data: Path, budget_s: float, test_paths: list[Path], test_labels: np.ndarray,
                   label_names: list[str], *, seed: int, cache_dir: Path, home: Path | None = None,
                   architecture: str = "auto", strategies: tuple[str, ...] | None = None,
                   keep_outputs: bool = False, batch_size: int = 16) -> dict[str, Any]:
    """One modelbuilder training run plus a test-set evaluation through MLModel.zip.

    ``home`` None gives a fresh MODELBUILDER_HOME (a cold feature cache, as a new user has).
    """
    from modelbuilder.pipeline import load_model
    from modelbuilder.training.config import TrainingConfig
    from modelbuilder.training.trainer import run_training

    cold = home is None
    home = isolated_home(home or fresh_dir(cache_dir, "home-"))
    work_dir = fresh_dir(cache_dir / "runs", "run-")
    try:
        config = TrainingConfig(data=str(data), time_budget=budget_s, architecture=architecture,
                                seed=seed, strategies=strategies)
        reporter = TimingReporter()
        started = time.monotonic()
        result = run_training(config, reporter, work_dir)
        train_seconds = time.monotonic() - started
        phases = reporter.phase_seconds()
        features = features_summary(reporter)

        started = time.monotonic()
        engine = load_model(result.model_path)
        load_seconds = time.monotonic() - started
        started = time.monotonic()
        outputs = engine.predict_batch([str(p) for p in test_paths], batch_size=batch_size)
        predict_seconds = time.monotonic() - started
        index = {name: i for i, name in enumerate(engine.labels)}
        predicted = np.array([index[o.prediction] for o in outputs])
        truth = np.array([index[label_names[int(v)]] for v in test_labels])
        images = features.get("images") or 0
        return {
            **accuracy_metrics(truth, predicted),
            "val_accuracy": round(result.accuracy, 4),
            "strategy": result.strategy,
            "backbone": result.backbone,
            "train_seconds": round(train_seconds, 1),
            "phase_seconds": phases,
            "trials": [{"name": t.name, "strategy": t.strategy, "image_size": t.image_size,
                        "val_accuracy": round(t.val_accuracy, 4), "seconds": round(t.seconds, 1),
                        "status": t.status} for t in result.trials],
            "features": features,
            "training_images_per_second": round(images / train_seconds, 1) if images else None,
            "test_images": len(test_paths),
            "model_load_seconds": round(load_seconds, 2),
            "predict_seconds": round(predict_seconds, 1),
            "predict_images_per_second": round(len(test_paths) / max(predict_seconds, 1e-9), 1),
            "cold_feature_cache": cold,
        }
    finally:
        if not keep_outputs:
            shutil.rmtree(work_dir, ignore_errors=True)
        if cold:
            shutil.rmtree(home, ignore_errors=True)
