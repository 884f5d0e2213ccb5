"""Training time and peak memory against the number of images, and feature-cache reuse.

    .venv/bin/python benchmarks/scaling.py                         # 1k, 5k, 20k images
    .venv/bin/python benchmarks/scaling.py --sizes 1000,5000,20000,60000

Each size trains in its own process on a stratified Fashion-MNIST subset
with a fixed strategy (``--strategies linear``) and a fixed budget; the budget only steers the
trainer's plan (feature resolution), and the default of 60m keeps the same 112-px plan for every
size up to 60k, so times are comparable. Then the largest size trains again, with the same
feature cache, on the same images plus 10% new ones: only the new images should be computed.
Each worker's peak RSS (the kernel's VmHWM) and peak RssAnon (its own memory, without the pages of the
memory-mapped feature cache; sampled every 50 ms from this process) are reported per size, with the
RssAnon growth from the second-largest size to the largest.
Prints one JSON line and appends it to benchmarks/results/scaling.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    CACHE_DIR,
    MemoryMonitor,
    calibrate,
    common_arguments,
    emit,
    fresh_dir,
    isolated_home,
    peak_rss_mb,
    setup_logging,
    stratified_subset,
)

logger = logging.getLogger("benchmarks")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,20000", help="comma-separated numbers of images")
    parser.add_argument("--time", default="60m", help="budget given to the trainer (steers its plan)")
    parser.add_argument("--strategies", default="linear", help="comma-separated trial strategies")
    parser.add_argument("--extra", type=float, default=0.1, help="share of new images in the cache rerun")
    parser.add_argument("--source", type=Path, default=None,
                        help="folder with the four *-ubyte.gz files (default: the Debian package's)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--architecture", default="auto")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    common_arguments(parser)
    return parser.parse_args(argv)


def worker(args: argparse.Namespace) -> int:
    """Train once on ``args.worker`` (a CSV) and print a JSON summary line (run in a subprocess)."""
    from _common import TimingReporter
    from _mb import features_summary

    from modelbuilder.training.config import TrainingConfig, parse_duration
    from modelbuilder.training.trainer import run_training

    assert args.home is not None
    isolated_home(args.home)
    work_dir = fresh_dir(args.cache_dir / "runs", "scaling-")
    try:
        config = TrainingConfig(data=str(args.worker), time_budget=parse_duration(args.time),
                                architecture=args.architecture, seed=args.seed,
                                strategies=tuple(args.strategies.split(",")))
        reporter = TimingReporter()
        started = time.monotonic()
        result = run_training(config, reporter, work_dir)
        seconds = time.monotonic() - started
        summary = {"train_seconds": round(seconds, 1), "phase_seconds": reporter.phase_seconds(),
                   "features": features_summary(reporter), "val_accuracy": round(result.accuracy, 4),
                   "strategy": result.strategy, "peak_rss_mb": peak_rss_mb()}
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def train_in_subprocess(args: argparse.Namespace, table: Path, home: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", str(table), "--home", str(home), "--time", args.time,
               "--strategies", args.strategies, "--seed", str(args.seed), "--cache-dir", str(args.cache_dir),
               "--architecture", args.architecture] + (["--quiet"] if args.quiet else [])
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        # Sampled from here, not by the worker itself: a worker busy in one long numpy call holds its
        # GIL, and a sampling thread inside it would miss exactly those moments.
        monitor = MemoryMonitor(process.pid).start()
        stdout, _ = process.communicate()
        memory = monitor.stop()
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command, stdout)
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    summary["memory_mib"] = memory
    return summary


def log_memory(images: int, summary: dict[str, Any]) -> None:
    """Each point as it comes (a 60k run takes long; the JSON line comes only at the end)."""
    memory = summary["memory_mib"]
    logger.info("scaling: %d images: %.0f s, peak RSS %.0f MiB, peak RssAnon %.0f MiB", images,
                summary["train_seconds"], memory["peak_rss_mib"], memory["peak_rss_anon_mib"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(not args.quiet)
    if args.worker is not None:
        return worker(args)
    from _fashion import ensure_source, png_folder, subset_table

    source = ensure_source(args.source)
    _, paths, labels = png_folder(source, "train", args.cache_dir)
    sizes = sorted(int(v) for v in args.sizes.split(","))
    points = []
    homes: dict[int, Path] = {}
    try:
        for size in sizes:
            chosen = stratified_subset(labels, size, args.seed)
            table = subset_table(paths, labels, chosen, f"scaling-{len(chosen)}-seed{args.seed}",
                                 args.cache_dir)
            homes[size] = fresh_dir(args.cache_dir, "home-")
            before = calibrate()
            logger.info("scaling: %d images", len(chosen))
            summary = train_in_subprocess(args, table, homes[size])
            log_memory(len(chosen), summary)
            points.append({"images": len(chosen), **summary, "calibration": before,
                           "seconds_per_1k_images": round(1000 * summary["train_seconds"] / len(chosen), 2)})
        largest = sizes[-1]
        base = stratified_subset(labels, largest, args.seed)
        # New images: training images not used yet, then (for the full 60k) the official test images.
        _, test_paths, test_labels = png_folder(source, "test", args.cache_dir)
        all_paths, all_labels = paths + test_paths, np.concatenate([labels, test_labels])
        want = max(1, round(args.extra * len(base)))
        pool = np.setdiff1d(np.arange(len(labels)), base)
        if len(pool) < want:
            pool = np.concatenate([pool, len(labels) + np.arange(len(test_paths))])
        extra = pool[stratified_subset(all_labels[pool], want, args.seed + 1)]
        table = subset_table(all_paths, all_labels, np.concatenate([base, extra]),
                             f"scaling-{len(base)}+{len(extra)}-seed{args.seed}", args.cache_dir)
        before = calibrate()
        logger.info("scaling: rerun on %d + %d new images with the same feature cache", len(base), len(extra))
        rerun = {"images": len(base) + len(extra), "new_images": len(extra),
                 **train_in_subprocess(args, table, homes[largest]), "calibration": before}
        log_memory(rerun["images"], rerun)
    finally:
        for home in homes.values():
            shutil.rmtree(home, ignore_errors=True)
    first, last = points[0], points[-1]
    memory = {str(p["images"]): {"peak_rss_mib": p["memory_mib"]["peak_rss_mib"],
                                 "peak_rss_anon_mib": p["memory_mib"]["peak_rss_anon_mib"]} for p in points}
    memory[f"{rerun['images']} (rerun)"] = {"peak_rss_mib": rerun["memory_mib"]["peak_rss_mib"],
                                             "peak_rss_anon_mib": rerun["memory_mib"]["peak_rss_anon_mib"]}
    # The bound: anonymous memory grows at most 15% from the second-largest size to the largest.
    before_last = points[-2] if len(points) > 1 else first
    anon_growth = round(last["memory_mib"]["peak_rss_anon_mib"]
                        / max(before_last["memory_mib"]["peak_rss_anon_mib"], 1e-9), 3)
    emit("scaling", {
        "config": {"sizes": sizes, "time": args.time, "strategies": args.strategies, "seed": args.seed},
        "points": points,
        "rerun_with_new_images": rerun,
        "peak_memory_mib": memory,
        "rss_anon_growth": {f"{before_last['images']}->{last['images']}": anon_growth},
        "time_growth": round(last["train_seconds"] / first["train_seconds"], 2),
        "size_growth": round(last["images"] / first["images"], 2),
        "calibration_end": calibrate(),
    }, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
