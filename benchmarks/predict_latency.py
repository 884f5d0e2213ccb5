"""How fast the shipped model predicts: PredictionEngine vs raw onnxruntime vs torch eager, same weights.

    .venv/bin/python benchmarks/predict_latency.py
    .venv/bin/python benchmarks/predict_latency.py --iterations 300 --rounds 5

Builds a 224-px EfficientNet-Lite0 classifier (pretrained backbone + a 10-way linear head), exports
it with the trainer's ``export_onnx`` and bundles it into MLModel.zip with ``write_bundle``, then
measures, interleaved in rounds so that a busy moment hits every variant alike:

- ``predict``: ``PredictionEngine.predict(path)`` on one 224x224 JPEG (decode + preprocess + model);
- ``prepare``: the engine's decode + preprocess alone;
- ``onnxruntime``: ``session.run`` on the already prepared tensor (a session made like the engine's);
- ``torch``: the same weights in torch eager mode on the same tensor;

plus throughput (images/s, the median of interleaved rounds) of ``predict_batch`` at several batch
sizes, of the raw session and of torch at batch 16, and of the trainer's feature path
(``training.features.run_onnx_outputs``: decode in threads + resize + backbone, batch 16).
Prints one JSON line and appends it to benchmarks/results/predict_latency.jsonl.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import CACHE_DIR, calibrate, common_arguments, emit, fresh_dir, peak_rss_mb, setup_logging

logger = logging.getLogger("benchmarks")

LABELS = [f"class{i}" for i in range(10)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200, help="timed single predictions per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batch-images", type=int, default=128, help="images for the throughput part")
    parser.add_argument("--batch-sizes", default="1,8,16,32", help="predict_batch batch sizes")
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--architecture", default="efficientnet_lite0")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    common_arguments(parser)
    return parser.parse_args(argv)


def photo_like(index: int, size: int) -> Any:
    """A 224x224 RGB image with smooth gradients, shapes and noise (JPEG-compresses like a photo)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(3 * x + rng.uniform(0, 6)), np.cos(4 * y + rng.uniform(0, 6)),
                     np.sin(2 * (x + y) + rng.uniform(0, 6))], axis=-1)
    pixels = (base * 80 + 128 + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, size - 40, 2)
        draw.ellipse([int(x0), int(y0), int(x0) + 40, int(y0) + 30],
                     fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def build_model(folder: Path, architecture: str, size: int, seed: int) -> tuple[Path, Path, Any]:
    """(MLModel.zip, bestModel.onnx, the torch model) for a pretrained backbone + linear head."""
    import torch
    import torch.nn as nn

    from modelbuilder.pipeline import onnx_metadata_props, write_bundle
    from modelbuilder.training.backbones import create_backbone, get_backbone_spec
    from modelbuilder.training.onnx_export import export_onnx

    torch.manual_seed(seed)
    spec = get_backbone_spec(architecture)
    preprocessing = spec.preprocessing(size)
    model = nn.Sequential(create_backbone(architecture, pretrained=True), nn.Linear(spec.feature_dim,
                                                                                   len(LABELS))).eval()
    onnx_path = export_onnx(model, size, folder / "bestModel.onnx",
                            onnx_metadata_props(LABELS, preprocessing))
    bundle = write_bundle(folder / "MLModel.zip", onnx_path, LABELS, preprocessing)
    return bundle, onnx_path, model


def timed(fn: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def stats(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples)
    return {"p50_ms": round(float(np.percentile(values, 50)), 2),
            "p95_ms": round(float(np.percentile(values, 95)), 2),
            "mean_ms": round(float(values.mean()), 2), "n": len(samples)}


def throughput_variants(args: argparse.Namespace, engine: Any, session: Any, model: Any, tensor: np.ndarray,
                        images: list[Path]) -> dict[str, Callable[[], int]]:
    """Each variant processes a set of images and returns how many."""
    import tempfile

    import torch

    from modelbuilder.training.backbones import get_backbone_spec
    from modelbuilder.training.features import run_onnx_outputs
    from modelbuilder.training.onnx_export import export_onnx, ort_session

    paths = [str(p) for p in images]
    prepared = np.repeat(tensor, 16, axis=0)
    torch_batch = torch.from_numpy(prepared)
    with tempfile.TemporaryDirectory() as tmp:  # the trainer's feature path: backbone only, batch 16
        features = ort_session(export_onnx(model[0], args.size, Path(tmp) / "features.onnx"))
    spec = get_backbone_spec(args.architecture).preprocessing(args.size)
    runs = max(1, len(paths) // 16)

    def raw_session() -> int:
        for _ in range(runs):
            session.run(["output1"], {"input1": prepared})
        return 16 * runs

    def torch_eager() -> int:
        with torch.inference_mode():
            for _ in range(max(1, runs // 4)):  # torch is slow here: fewer batches
                model(torch_batch)
        return 16 * max(1, runs // 4)

    def batch(size: int) -> Callable[[], int]:
        return lambda: len(engine.predict_batch(paths, batch_size=size))

    variants: dict[str, Callable[[], int]] = {
        f"predict_batch_{size}": batch(size) for size in (int(v) for v in args.batch_sizes.split(","))}
    variants["onnxruntime_batch_16"] = raw_session
    variants["torch_batch_16"] = torch_eager
    variants["feature_extraction"] = lambda: len(run_onnx_outputs(features, images, spec, ["output1"])[0])
    return variants


def measure_throughput(args: argparse.Namespace, engine: Any, session: Any, model: Any, tensor: np.ndarray,
                       images: list[Path]) -> dict[str, float]:
    """Images/second of each variant: the median over interleaved rounds (after one warm-up call)."""
    variants = throughput_variants(args, engine, session, model, tensor, images)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    for round_index in range(args.rounds):
        order = list(variants) if round_index % 2 == 0 else list(variants)[::-1]
        for name in order:
            start = time.perf_counter()
            count = variants[name]()
            rates[name].append(count / (time.perf_counter() - start))
    return {name: round(float(np.median(values)), 1) for name, values in rates.items()}


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import torch

    from modelbuilder.pipeline import load_model
    from modelbuilder.pipeline.engine import physical_cores
    from modelbuilder.pipeline.signature import create_session

    started = time.monotonic()
    bundle, onnx_path, model = build_model(folder, args.architecture, args.size, args.seed)
    build_seconds = time.monotonic() - started
    images = []
    for i in range(max(1, args.batch_images)):
        path = folder / f"image{i:04d}.jpg"
        photo_like(i, args.size).save(path, "JPEG", quality=90)
        images.append(path)
    single = str(images[0])

    threads = physical_cores()
    engine = load_model(bundle)
    session = create_session(str(onnx_path), source="benchmark", threads=threads, optimize=True)
    session_1t = create_session(str(onnx_path), source="benchmark", threads=1, optimize=True)
    torch.set_num_threads(threads)
    tensor = engine.prepare(single)[np.newaxis]
    torch_input = torch.from_numpy(tensor)
    ort_outputs = session.run(["output1"], {"input1": tensor})[0]
    with torch.inference_mode():
        torch_outputs = model(torch_input).numpy()

    def run_torch() -> None:
        with torch.inference_mode():
            model(torch_input)

    variants: dict[str, Callable[[], object]] = {
        "predict": lambda: engine.predict(single),
        "prepare": lambda: engine.prepare(single),
        "onnxruntime": lambda: session.run(["output1"], {"input1": tensor}),
        "onnxruntime_1_thread": lambda: session_1t.run(["output1"], {"input1": tensor}),
        "torch": run_torch,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        timed(fn, 5)
    for round_index in range(args.rounds):
        order = list(variants) if round_index % 2 == 0 else list(variants)[::-1]
        for name in order:
            samples[name] += timed(variants[name], args.iterations)
    latency = {name: stats(values) for name, values in samples.items()}
    raw = latency["onnxruntime"]["p50_ms"]

    throughput = measure_throughput(args, engine, session, model, tensor, images)
    return {
        "latency": latency,
        "overhead_ratio": round(latency["predict"]["p50_ms"] / raw - 1, 3),
        "prepare_share": round(latency["prepare"]["p50_ms"] / latency["predict"]["p50_ms"], 3),
        "torch_vs_onnxruntime": round(latency["torch"]["p50_ms"] / raw, 2),
        "throughput_images_per_second": throughput,
        "max_abs_logit_diff_torch_vs_onnx": float(np.max(np.abs(torch_outputs - ort_outputs))),
        "threads": threads,
        "model_build_seconds": round(build_seconds, 1),
        "model_bytes": onnx_path.stat().st_size,
        "jpeg_bytes": images[0].stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(not args.quiet)
    folder = fresh_dir(args.cache_dir, "latency-")
    try:
        before = calibrate()
        result = measure(args, folder)
        emit("predict_latency", {
            "config": {"architecture": args.architecture, "size": args.size, "iterations": args.iterations,
                       "rounds": args.rounds, "batch_images": args.batch_images},
            "calibration": {"before": before, "after": calibrate()},
            **result,
            "peak_rss_mb": peak_rss_mb(),
        }, args.results)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
