"""Fashion-MNIST: how good a model modelbuilder gives for a time budget, tested on the official test set.

    .venv/bin/python benchmarks/fashion_mnist.py --time 10m                 # all 60,000 images
    .venv/bin/python benchmarks/fashion_mnist.py --time 2m --train-limit 5000
    .venv/bin/python benchmarks/fashion_mnist.py --curve 2m,5m,10m          # one run per budget

Writes the training images as one PNG folder per label (cached under benchmarks/.cache/), trains
with ``run_training`` in this process (the same function ``modelbuilder train`` runs in its worker)
on a cold feature cache, then predicts the official test images through MLModel.zip with
``PredictionEngine.predict_batch``. Prints one JSON line and appends it to
benchmarks/results/fashion_mnist.jsonl (``--curve``: fashion_mnist_curve.jsonl).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    CACHE_DIR,
    MemoryMonitor,
    calibrate,
    common_arguments,
    emit,
    peak_rss_mb,
    setup_logging,
)

logger = logging.getLogger("benchmarks")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", default="10m", help="training budget (90s, 5m, 1h); default 10m")
    parser.add_argument("--train-limit", type=int, default=None, help="stratified subset of the 60k images")
    parser.add_argument("--test-limit", type=int, default=None,
                        help="stratified subset of the 10k test images")
    parser.add_argument("--curve", default=None,
                        help="comma-separated budgets, e.g. 2m,5m,10m: one fresh run (own process) each")
    parser.add_argument("--source", type=Path, default=None,
                        help="folder with the four *-ubyte.gz files (default: the Debian package's)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where PNG folders and runs go")
    parser.add_argument("--architecture", default="auto")
    parser.add_argument("--strategies", default=None, help="comma-separated trial strategies (default all)")
    parser.add_argument("--batch-size", type=int, default=16, help="predict_batch batch size")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the run's output folder")
    common_arguments(parser)
    return parser.parse_args(argv)


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    from _fashion import LABELS, ensure_source, official_test_images, training_source
    from _mb import train_and_test

    from modelbuilder.training.config import parse_duration

    budget = parse_duration(args.time)
    # In-process sampling (every 50 ms) of RssAnon: the process's own memory, which mapped feature
    # cache files do not count in.
    memory = MemoryMonitor().start()
    started = time.monotonic()
    source = ensure_source(args.source)
    data, train_paths, _ = training_source(source, args.train_limit, args.seed, args.cache_dir)
    test_paths, test_labels = official_test_images(source, args.test_limit, args.seed, args.cache_dir)
    prepare_seconds = time.monotonic() - started
    before = calibrate()
    strategies = tuple(args.strategies.split(",")) if args.strategies else None
    result = train_and_test(data, budget, test_paths, test_labels, LABELS, seed=args.seed,
                            cache_dir=args.cache_dir, architecture=args.architecture,
                            strategies=strategies, keep_outputs=args.keep_outputs,
                            batch_size=args.batch_size)
    return {
        "config": {"time": args.time, "budget_s": budget, "train_images": len(train_paths),
                   "test_images": len(test_paths), "seed": args.seed, "architecture": args.architecture,
                   "strategies": list(strategies) if strategies else None},
        "calibration": {"before": before, "after": calibrate()},
        "prepare_data_seconds": round(prepare_seconds, 1),
        "result": result,
        "peak_rss_mb": peak_rss_mb(),
        "memory_mib": memory.stop(),
    }


def run_curve(args: argparse.Namespace) -> dict[str, Any]:
    """One subprocess per budget, so each point has its own peak RSS and a cold feature cache."""
    points = []
    for budget in args.curve.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp) / "point.jsonl"
            command = [sys.executable, __file__, "--time", budget, "--seed", str(args.seed),
                       "--cache-dir", str(args.cache_dir), "--architecture", args.architecture,
                       "--results", str(results)]
            for flag, value in (("--train-limit", args.train_limit), ("--test-limit", args.test_limit),
                                ("--source", args.source), ("--strategies", args.strategies)):
                if value is not None:
                    command += [flag, str(value)]
            if args.quiet:
                command.append("--quiet")
            logger.info("curve point %s: %s", budget, " ".join(command))
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            point = json.loads(results.read_text().splitlines()[-1])
        result = point["result"]
        points.append({"time": budget, "budget_s": point["config"]["budget_s"],
                       "accuracy": result["accuracy"], "macro_accuracy": result["macro_accuracy"],
                       "strategy": result["strategy"], "train_seconds": result["train_seconds"],
                       "phase_seconds": result["phase_seconds"], "trials": result["trials"],
                       "features": result["features"], "peak_rss_mb": point["peak_rss_mb"],
                       "memory_mib": point["memory_mib"],
                       "calibration": point["calibration"], "train_images": point["config"]["train_images"],
                       "test_images": point["config"]["test_images"]})
    return {"config": {"curve": args.curve, "train_limit": args.train_limit, "test_limit": args.test_limit,
                       "seed": args.seed}, "points": points}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(not args.quiet)
    if args.curve:
        emit("fashion_mnist_curve", run_curve(args), args.results)
    else:
        emit("fashion_mnist", run_once(args), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
