"""modelbuilder next to the baselines a user could pick instead: same data, same budget, one run.

    .venv/bin/python benchmarks/baselines.py                       # --time 3m, 2000 / 1000 images
    .venv/bin/python benchmarks/baselines.py --time 5m --train-limit 10000 --repeat 2

Variants (run interleaved; with ``--repeat 2`` the second round runs in reverse order so that a
machine getting busier or quieter affects every variant alike):

- ``modelbuilder``: ``run_training`` with the budget, tested through MLModel.zip.
- ``linear_head``: frozen EfficientNet-Lite0 features (onnxruntime, 224 px) + LogisticRegression.
- ``finetune``: the timm/torchvision tutorial fine-tuning of EfficientNet-Lite0 (AdamW, batch 64).
- ``sklearn``: scikit-learn's best classic model on raw pixels that fits the budget.
- ``fastai``: fastai's ``vision_learner`` + ``fine_tune`` on the same offline EfficientNet-Lite0
  weights, 64 px, as many epochs as fit the budget (installed on first use when missing:
  benchmarks/_baselines_fastai.py; skipped with the reason when it cannot be installed).

Every variant trains on the same Fashion-MNIST training subset and is scored on the same official
test images; test-time prediction is outside the budget. Prints one JSON line and appends it to
benchmarks/results/baselines.jsonl.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import CACHE_DIR, accuracy_metrics, calibrate, common_arguments, emit, peak_rss_mb, setup_logging

logger = logging.getLogger("benchmarks")

VARIANTS = ("modelbuilder", "linear_head", "finetune", "sklearn", "fastai")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", default="3m", help="training budget of every variant (default 3m)")
    parser.add_argument("--train-limit", type=int, default=2000, help="stratified training subset (0: all)")
    parser.add_argument("--test-limit", type=int, default=1000, help="stratified test subset (0: all)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of "
                        + ", ".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1, help="rounds; even rounds run in reverse order")
    parser.add_argument("--source", type=Path, default=None,
                        help="folder with the four *-ubyte.gz files (default: the Debian package's)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--architecture", default="auto", help="modelbuilder's --architecture")
    parser.add_argument("--image-size", type=int, default=224,
                        help="input size of the linear-head and fine-tuning baselines (default 224)")
    parser.add_argument("--fastai-size", type=int, default=64,
                        help="input size of the fastai peer (default 64, as in issue 10's reference run)")
    parser.add_argument("--fastai-time", default=None,
                        help="training budget of the fastai peer (default: --time)")
    common_arguments(parser)
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def run_variant(name: str, args: argparse.Namespace, budget: float, data: Path,
                train: tuple[list[Path], np.ndarray], test: tuple[list[Path], np.ndarray],
                label_names: list[str], pixel_format: tuple[int | None, str] = (None, "L")) -> dict[str, Any]:
    """One variant trained on ``train`` within ``budget`` seconds and scored on ``test``.

    ``data`` is what modelbuilder trains on (a folder with one sub-folder per label, or an
    ``ImagePath,Label`` CSV of the same images); ``pixel_format`` is (side or None, PIL mode) of the
    scikit-learn variant's raw pixels. ``args`` needs ``seed``, ``cache_dir``, ``architecture``,
    ``image_size`` and ``fastai_size``; ``fastai_time``, where present, is the fastai peer's own budget. A
    variant that cannot run here returns ``{"skipped": why}``.
    """
    if name == "modelbuilder":
        from _mb import train_and_test

        result = train_and_test(data, budget, test[0], test[1], label_names, seed=args.seed,
                                cache_dir=args.cache_dir, architecture=args.architecture)
        keep = ("accuracy", "macro_accuracy", "strategy", "train_seconds", "phase_seconds", "trials",
                "features")
        return {key: result[key] for key in keep}
    if name == "sklearn":
        from _baselines_sklearn import best_classic, pixels

        started = time.monotonic()
        train_x, test_x = pixels(train[0], *pixel_format), pixels(test[0], *pixel_format)
        load_seconds = time.monotonic() - started
        outcome = best_classic(train_x, train[1], test_x, max(1.0, budget - load_seconds), args.seed)
        outcome["train_seconds"] += load_seconds
    elif name == "linear_head":
        from _baselines_torch import linear_head

        outcome = linear_head(train, test, budget, args.seed, args.image_size)
    elif name == "fastai":
        from _baselines_fastai import fastai_finetune

        from modelbuilder.training.config import parse_duration

        fastai_time = getattr(args, "fastai_time", None)  # photos.py has no --fastai-time
        fastai_budget = parse_duration(fastai_time) if fastai_time else budget
        outcome = fastai_finetune(train, test, fastai_budget, args.seed, label_names, args.fastai_size,
                                  data_folder=data if data.is_dir() else None)
        if "skipped" in outcome:
            return outcome
    else:
        from _baselines_torch import finetune

        outcome = finetune(train, test, budget, args.seed, len(label_names), args.image_size)
    predicted = outcome.pop("predicted")
    outcome["train_seconds"] = round(outcome["train_seconds"], 1)
    return {**accuracy_metrics(test[1], predicted), **outcome}


def run_rounds(variants: list[str], repeat: int, run: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every variant ``repeat`` times (even rounds in reverse order), each with its own calibration.

    ``run(name)`` trains and scores one variant. Returns (one record per run, mean accuracy per
    variant that ran; a skipped variant has no accuracy).
    """
    rounds: list[dict[str, Any]] = []
    for round_index in range(repeat):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for name in order:
            logger.info("round %d: %s", round_index + 1, name)
            before = calibrate()
            started = time.monotonic()
            result = run(name)
            rounds.append({"round": round_index + 1, "variant": name, **result,
                           "wall_seconds": round(time.monotonic() - started, 1), "calibration": before})
    summary = {name: round(float(np.mean(scores)), 4) for name in variants
               if (scores := [r["accuracy"] for r in rounds if r["variant"] == name and "accuracy" in r])}
    return rounds, summary


def skipped_variants(rounds: list[dict[str, Any]]) -> dict[str, str]:
    return {r["variant"]: r["skipped"] for r in rounds if "skipped" in r}


def main(argv: list[str] | None = None) -> int:
    from _fashion import LABELS, ensure_source, official_test_images, training_source

    from modelbuilder.training.config import parse_duration

    args = parse_args(argv)
    setup_logging(not args.quiet)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # what run_training uses too
    budget = parse_duration(args.time)
    source = ensure_source(args.source)
    data, train_paths, train_labels = training_source(source, args.train_limit or None, args.seed,
                                                      args.cache_dir)
    test_paths, test_labels = official_test_images(source, args.test_limit or None, args.seed, args.cache_dir)
    variants = args.variants.split(",")
    rounds, summary = run_rounds(variants, args.repeat, lambda name: run_variant(
        name, args, budget, data, (train_paths, train_labels), (test_paths, test_labels), LABELS))
    emit("baselines", {
        "config": {"time": args.time, "budget_s": budget, "train_images": len(train_paths),
                   "test_images": len(test_paths), "seed": args.seed, "repeat": args.repeat,
                   "image_size": args.image_size, "fastai_size": args.fastai_size,
                   "fastai_time": args.fastai_time or args.time},
        "accuracy": summary,
        "skipped": skipped_variants(rounds),
        "runs": rounds,
        "calibration_end": calibrate(),
        "peak_rss_mb": peak_rss_mb(),
    }, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
