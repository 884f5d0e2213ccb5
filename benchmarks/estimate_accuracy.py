"""How close the portal's Train-step estimate is to the feature-pass time the trainer then records.

For each data set, in a fresh MODELBUILDER_HOME (cold feature cache, no earlier run, no cached probe):

1. ``portal.estimate.estimate_training`` in this process, as the portal makes it (the live probe included);
2. a second estimate (the probe now cached: how long a repeated estimate takes);
3. a real training run in a fresh process (as the portal's worker is), with the same data, budget and
   architecture, right after the estimate (the same minute: a shared machine's speed changes by the
   minute); "actual" is the plan.json ``feature_seconds`` it records (``training.search``: ONNX export,
   onnxruntime session start and the feature pass over every image). The run is stopped once its feature
   pass is done (the trials that follow do not change it), so a round takes a minute, not five.

Prints one JSON line per data set and round: estimate, actual, ratio (estimate / actual), how the estimate
was made, and the load average around it (the machine may be shared: the ratio is only as steady as the
machine), then one summary line (``estimate_accuracy_summary``: how many cases are within ±35%), and a
table of the cases on stderr.

Data sets: ``tiny`` (30 generated 24 px PNGs, 2 labels, test_tiny backbone, 15 s: the wizard tests'
data), ``fashion-mnist-mini`` (samples/, 500 28 px greyscale PNGs, auto backbone, 60 s), ``rgb1000``
(1,000 generated 128 px RGB JPEGs, 4 labels, auto backbone, 90 s) and ``large-jpeg`` (240 generated
1280x960 JPEGs, 3 labels, auto backbone, 60 s: decoding costs more than the network here, and grows with
the source's pixels, not with the feature resolution).

    python benchmarks/estimate_accuracy.py --repeat 3
    python benchmarks/estimate_accuracy.py --only tiny,large-jpeg
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    CACHE_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    common_arguments,
    emit,
    fresh_dir,
    isolated_home,
    setup_logging,
)
from PIL import Image

logger = logging.getLogger("benchmarks")

DATASETS: dict[str, dict[str, Any]] = {
    "tiny": {"architecture": "test_tiny", "budget_s": 15.0},
    "fashion-mnist-mini": {"architecture": "auto", "budget_s": 60.0},
    "rgb1000": {"architecture": "auto", "budget_s": 90.0},
    "large-jpeg": {"architecture": "auto", "budget_s": 60.0},
}
#: Generated data sets: labels, images per label, (width, height), file format.
GENERATED: dict[str, tuple[int, int, tuple[int, int], str]] = {
    "tiny": (2, 15, (24, 24), "PNG"),
    "rgb1000": (4, 250, (128, 128), "JPEG"),
    "large-jpeg": (3, 80, (1280, 960), "JPEG"),
}
WITHIN = 0.35  # the bar: the estimate within ±35% of the actual feature time


def _image(label: int, index: int, size: tuple[int, int], seed: int) -> Any:
    """A learnable RGB image: a label colour, stripes and noise (as the tests' factories make); a large one
    is a 160 px one scaled up, with mild noise (a photo-like file size, full decoding cost)."""
    from PIL import Image

    rng = np.random.default_rng(seed * 100_003 + label * 1009 + index)
    colours = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 40)]
    side = min(max(size), 160)
    pixels = np.tile(np.array(colours[label % 4], np.float32), (side, side, 1)) * 0.6
    pixels += rng.normal(0, 18, (side, side, 3))
    stripe = max(1, side // (label + 2))
    pixels[::stripe] = 255 - pixels[::stripe]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if image.size == size:
        return image
    large = np.asarray(image.resize(size, Image.Resampling.BILINEAR), np.float32)
    large += rng.normal(0, 4, large.shape)
    return Image.fromarray(np.clip(large, 0, 255).astype(np.uint8), "RGB")


def build_data(name: str, root: Path, seed: int) -> Path:
    """The data set's folder (generated offline under ``root`` unless it ships in samples/)."""
    if name == "fashion-mnist-mini":
        return REPO_ROOT / "samples" / "fashion-mnist-mini"
    labels, per_label, size, fmt = GENERATED[name]
    folder = root / name
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.*")) == labels * per_label:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for label in range(labels):
        (folder / f"label{label}").mkdir(parents=True)
        for index in range(per_label):
            path = folder / f"label{label}" / f"{index:04d}.{fmt.lower().replace('jpeg', 'jpg')}"
            _image(label, index, size, seed).save(path, fmt)
    return folder


def estimate(folder: Path, budget_s: float, architecture: str) -> tuple[dict[str, Any], float, float]:
    """(the estimate, seconds it took with a live probe, seconds a repeated estimate took)."""
    from modelbuilder.portal.datasources import build_preview
    from modelbuilder.portal.estimate import estimate_training
    from modelbuilder.services.workspaces import open_session
    from modelbuilder.store.catalog import Catalog

    workspace = Catalog().create_workspace("bench")
    session = open_session(workspace)
    preview = build_preview(f"folder:bench:{folder.name}", folder)
    started = time.monotonic()
    first = estimate_training(session, preview, budget_s, architecture).to_dict()
    first_s = time.monotonic() - started
    started = time.monotonic()
    estimate_training(session, preview, budget_s, architecture)
    return first, first_s, time.monotonic() - started


def train(folder: Path, budget_s: float, architecture: str, seed: int, work: Path) -> dict[str, Any]:
    """A training run in a fresh process (as the portal's worker); its recorded plan.json."""
    command = [sys.executable, str(Path(__file__).resolve()), "--train", str(folder),
               "--budget", str(budget_s), "--architecture", architecture, "--seed", str(seed),
               "--work", str(work)]
    started = time.monotonic()
    subprocess.run(command, check=True, env=os.environ.copy(), stdout=subprocess.DEVNULL)
    plan: dict[str, Any] = json.loads((work / "plan.json").read_text(encoding="utf-8"))
    plan["run_seconds"] = round(time.monotonic() - started, 1)
    plan["parts"] = json.loads((work / PARTS_FILE).read_text(encoding="utf-8"))
    return plan


#: Where the training subprocess writes how its feature pass spent its time (export, session, batches).
PARTS_FILE = "feature-parts.json"


def _timed_parts(work: Path) -> None:
    """Time the trainer's own export, session start and feature pass (wrapping the functions that
    ``feature_pass.extract`` calls), so that each case shows which part an estimate missed; written to
    ``work/PARTS_FILE`` when the pass ends."""
    from modelbuilder.training import feature_pass, features

    parts: dict[str, float] = {}

    def timed(name: str, function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                parts[name] = round(parts.get(name, 0.0) + time.monotonic() - started, 4)
        return call

    real_run = features.run_onnx_outputs

    def batches(*args: Any, **kwargs: Any) -> Any:
        marks: list[tuple[int, float]] = []
        progress = kwargs.get("progress")

        def mark(done: int, total: int) -> None:
            marks.append((done, time.monotonic()))
            if progress is not None:
                progress(done, total)

        started = time.monotonic()
        result = real_run(*args, **{**kwargs, "progress": mark})
        if marks:
            parts["first_batch_s"] = round(marks[0][1] - started, 4)
            steady = marks[-1][0] - marks[0][0]
            if steady:
                parts["steady_rate"] = round(steady / max(marks[-1][1] - marks[0][1], 1e-6), 2)
            parts["batches_s"] = round(marks[-1][1] - started, 4)
        return result

    def extract(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        result = real_extract(*args, **kwargs)
        parts["extract_s"] = round(time.monotonic() - started, 4)
        (work / PARTS_FILE).write_text(json.dumps(parts), encoding="utf-8")
        return result

    feature_pass.export_onnx = timed("export_s", feature_pass.export_onnx)
    feature_pass.ort_session = timed("session_s", feature_pass.ort_session)
    features.run_onnx_outputs = batches
    real_extract = feature_pass.extract_cached
    feature_pass.extract_cached = extract


def _train_here(args: argparse.Namespace) -> None:
    from modelbuilder.training.config import TrainingConfig
    from modelbuilder.training.reporter import RecordingReporter
    from modelbuilder.training.trainer import run_training

    _timed_parts(args.work)

    class StopAfterFeatures(RecordingReporter):
        """Asks the run to stop once every image has its features (before the first trial)."""

        features_done = False

        def progress(self, task: str, completed: int, total: int | None) -> None:
            super().progress(task, completed, total)
            if task == "features" and total is not None and completed >= total:
                self.features_done = True

        def should_stop(self) -> bool:
            return self.features_done

    config = TrainingConfig(data=str(args.train), time_budget=args.budget, architecture=args.architecture,
                            seed=args.seed)
    run_training(config, StopAfterFeatures(), args.work)


def measure(name: str, seed: int) -> dict[str, Any]:
    settings = DATASETS[name]
    folder = build_data(name, CACHE_DIR / "estimate-data", seed)
    home = isolated_home(fresh_dir(CACHE_DIR, "home-"))
    try:
        load_before = os.getloadavg()
        found, probe_s, repeat_s = estimate(folder, settings["budget_s"], settings["architecture"])
        plan = train(folder, settings["budget_s"], settings["architecture"], seed, fresh_dir(home, "run-"))
        actual = float(plan["feature_seconds"])
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    with Image.open(next(p for p in sorted(folder.rglob("*")) if p.is_file())) as first:
        source_size = f"{first.width}x{first.height}"
    ratio = found["feature_seconds"] / actual if actual > 0 else None
    return {
        "data": name, "images": found["images"], "source_size": source_size,
        "architecture": settings["architecture"],
        "budget_s": settings["budget_s"], "backbone": found["backbone"],
        "estimate_resolution": found["resolution"], "actual_resolution": plan.get("feature_size"),
        "estimate_seconds": round(found["feature_seconds"], 3), "actual_seconds": round(actual, 3),
        "ratio": None if ratio is None else round(ratio, 3),
        "within_35": ratio is not None and abs(ratio - 1) <= WITHIN,
        "estimate_overhead_seconds": found["overhead_seconds"], "estimate_rate": found["feature_rate"],
        "estimate_parts": found["overhead_parts"], "actual_parts": plan["parts"],
        "actual_rate_incl_overhead": plan.get("feature_rate"), "speed_source": found["speed_source"],
        "estimate_call_seconds": round(probe_s, 2), "repeat_estimate_call_seconds": round(repeat_s, 3),
        "feature_method": found["feature_method"], "run_seconds": plan["run_seconds"],
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in load_after], "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser)
    parser.add_argument("--only", default=",".join(DATASETS), help="comma-separated data sets")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over the data sets (each measurement starts cold: new home, new probe)")
    # The training subprocess (internal):
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--architecture", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train is not None:
        _train_here(args)
        return
    setup_logging(not args.quiet)
    names = args.only.split(",")
    for name in names:
        if name not in DATASETS:
            parser.error(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    # The summary goes with the cases, not into a file of its own.
    results = args.results or RESULTS_DIR / "estimate_accuracy.jsonl"
    cases = []
    for round_number in range(1, args.repeat + 1):
        for name in names:
            logger.info("estimate_accuracy: %s (round %d)", name, round_number)
            cases.append(emit("estimate_accuracy", {**measure(name, args.seed), "round": round_number},
                              results))
    within = sum(1 for case in cases if case["within_35"])
    ratios = [case["ratio"] for case in cases if case["ratio"] is not None]
    emit("estimate_accuracy_summary", {
        "cases": len(cases), "within_35": within, "data": names, "rounds": args.repeat,
        "ratio_min": min(ratios, default=None), "ratio_max": max(ratios, default=None),
        "ratio_median": float(np.median(ratios)) if ratios else None,
    }, results)
    print(_table(cases, within), file=sys.stderr)


def _table(cases: list[dict[str, Any]], within: int) -> str:
    """The cases as a text table (stderr; stdout keeps one JSON line per case and the summary)."""
    header = ("round", "data", "images", "source", "px", "estimate_s", "overhead_s", "actual_s", "ratio",
              "within")
    rows = [header] + [
        (str(c["round"]), c["data"], str(c["images"]), c["source_size"], str(c["actual_resolution"]),
         f"{c['estimate_seconds']:.2f}", f"{c['estimate_overhead_seconds'] or 0:.2f}",
         f"{c['actual_seconds']:.2f}", f"{c['ratio']:.2f}" if c["ratio"] is not None else "-",
         "yes" if c["within_35"] else "NO")
        for c in cases
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.append(f"{within} of {len(cases)} estimates within ±{WITHIN:.0%} of the actual feature time")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
