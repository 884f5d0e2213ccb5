"""The Train step's probe: a short feature pass through the trainer's own functions (``feature_pass``'s
``CachedOutputs``, ``export_onnx``, ``ort_session``, ``features.extract_cached``), timed part by part.

The trainer's recorded feature time (``training.search``) is one call: ONNX export + onnxruntime session
start + ``extract_cached`` over every image, which decodes and infers batch after batch and then writes
each cached array once. So the probe separates what a pass pays once from what it pays per image:

- ``setup_s``: export + session start (grows with the backbone and resolution, not with the data);
- ``warmup_s``: the first batch's excess over a steady batch (the thread pool, the first decode that
  nothing overlaps, onnxruntime's first run);
- ``write_s``: the fixed part of committing the cached arrays after the last batch (a pass writes once;
  the part that grows with the rows is in the rate: two calls of different sizes separate the two);
- ``rate``: images/s between the first and the last batch of a timed call, long enough (about
  ``TARGET_SECONDS``) that one busy moment of a shared machine does not decide it, plus each image's share
  of the write.

Decoding is part of the rate, so the images must be like the data's: the caller passes a sample spread
over the data's file sizes (``sample_paths``), since decoding cost grows with the source's pixels, not
with the feature resolution.

Run in a fresh interpreter (``python -m modelbuilder.portal.estimate_probe``, JSON on stdin and stdout), as
the trainer's worker is a fresh process; nothing is written to the feature cache.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: Images per onnxruntime batch (``features.run_onnx_outputs``' default, which the trainer uses).
BATCH = 16
#: The timed call lasts about this long (fewer images on a slow machine, more on a fast one) ...
TARGET_SECONDS = 1.5
#: ... each call within these bounds (images, multiples of BATCH).
MIN_TIMED, MAX_TIMED = 3 * BATCH, 128 * BATCH
#: At most this many timed calls (each one sized to fill the rest of TARGET_SECONDS).
TIMED_CALLS = 3
#: Images of the data the probe decodes (it cycles through them).
SAMPLE_SIZE = 64
#: Files looked at (their sizes) to choose the sample; an evenly spaced subset of bigger data.
SIZE_LOOKUPS = 4096


@dataclass(frozen=True)
class ProbeTiming:
    """What a probe measured (see the module docstring)."""

    setup_s: float
    warmup_s: float
    write_s: float
    rate: float
    images: int  # images timed for the rate

    @property
    def overhead_s(self) -> float:
        """What the trainer's pass pays once, whatever its size."""
        return self.setup_s + self.warmup_s + self.write_s

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def sample_paths(paths: list[Path], count: int = SAMPLE_SIZE) -> list[Path]:
    """``count`` of ``paths`` at evenly spaced quantiles of their file size, in a shuffled (seeded) order,
    so that every batch of the probe decodes small and large files in the data's proportions."""
    ordered = sorted(paths)
    if len(ordered) > SIZE_LOOKUPS:
        step = len(ordered) / SIZE_LOOKUPS
        ordered = [ordered[int(i * step)] for i in range(SIZE_LOOKUPS)]

    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    by_size = sorted(ordered, key=lambda p: (size(p), p))
    if len(by_size) > count:
        step = len(by_size) / count
        by_size = [by_size[int((i + 0.5) * step)] for i in range(count)]
    random.Random(0).shuffle(by_size)
    return by_size


def _timed_call(session: object, paths: list[Path], count: int, start: int, spec: object,
                caches: dict[str, object]) -> tuple[float, float, float, int]:
    """``extract_cached`` over ``count`` images (cycling ``paths``) with fresh hashes.

    Returns (first batch seconds, steady images/s after it, seconds after the last batch, images timed).
    """
    from ..training.features import extract_cached

    chosen = [paths[(start + i) % len(paths)] for i in range(count)]
    marks: list[tuple[int, float]] = []
    began = time.monotonic()
    extract_cached(session, chosen, [f"probe-{start + i}" for i in range(count)], spec,  # type: ignore[arg-type]
                   caches, batch_size=BATCH,  # type: ignore[arg-type]
                   progress=lambda done, _total: marks.append((done, time.monotonic())))
    ended = time.monotonic()
    first = marks[0][1] - began
    timed = marks[-1][0] - marks[0][0]
    rate = timed / max(marks[-1][1] - marks[0][1], 1e-6) if timed else BATCH / max(first, 1e-6)
    return first, rate, ended - marks[-1][1], timed


def time_pass(backbone: str, size: int, pool: int | None, outputs: tuple[str, ...], paths: list[Path],
              tmp: Path, weights: str | None = None) -> ProbeTiming:
    """Time the trainer's feature pass on ``paths`` (cycled), writing only under ``tmp``.

    Raises: ModelBuilderError (weights, export) as training would; ValueError without paths.
    """
    from ..training.backbones import create_backbone, get_backbone_spec, split_backbone
    from ..training.feature_pass import DTYPES, CachedOutputs
    from ..training.features import FeatureCache
    from ..training.onnx_export import export_onnx, ort_session

    if not paths:
        raise ValueError("The probe needs at least one image.")
    # As Search.run: the backbone is built before the pass's clock starts.
    model = create_backbone(backbone, pretrained=True, weights=weights).eval()
    stem, tail, _ = split_backbone(backbone, model, size)
    spec = get_backbone_spec(backbone).preprocessing(size)
    started = time.monotonic()
    session = ort_session(export_onnx(CachedOutputs(stem, tail, pool, outputs), size, tmp / "probe.onnx",
                                      output_names=outputs))
    setup_s = time.monotonic() - started

    def caches(name: str) -> dict[str, object]:
        return {out: FeatureCache(tmp / f"{name}-{out}", DTYPES[out]) for out in outputs}

    first_s, _, first_write_s, _ = _timed_call(session, paths, BATCH, 0, spec, caches("warm"))
    # Timed calls until about TARGET_SECONDS of steady batches (at most TIMED_CALLS): each is sized by the
    # rate seen so far (the first by the first, slowest batch), plus one batch for the call's own first
    # batch, which the rate leaves out. A short window is one busy (or idle) moment of a shared machine.
    timed, steady_s, start, rate = 0, 0.0, BATCH, BATCH / max(first_s, 1e-6)
    count, write_s = BATCH, first_write_s
    for call in range(TIMED_CALLS):
        fits = int(rate * (TARGET_SECONDS - steady_s))
        if call and fits < MIN_TIMED:
            break
        count = min(MAX_TIMED, max(MIN_TIMED, fits // BATCH * BATCH)) + BATCH
        _, call_rate, write_s, images = _timed_call(session, paths, count, start, spec, caches(f"t{call}"))
        start += count
        timed += images
        steady_s += images / call_rate
        rate = timed / steady_s
    # The write of BATCH rows and of the last call's rows: a fixed part (the first call's, as the trainer's
    # one write is its process's first) and a part per row, which joins the per-image cost.
    per_row = max(0.0, (write_s - first_write_s) / max(count - BATCH, 1))
    fixed_write = max(0.0, first_write_s - BATCH * per_row)
    warmup_s = max(0.0, first_s - BATCH / rate)
    return ProbeTiming(setup_s=setup_s, warmup_s=warmup_s, write_s=fixed_write,
                       rate=1.0 / (1.0 / rate + per_row), images=timed)


def main() -> None:
    """stdin: {"backbone", "size", "pool", "outputs", "paths"}; stdout: one JSON line, the timing or
    {"error": why}."""
    try:
        from ..errors import ModelBuilderError
    except ImportError as exc:  # pragma: no cover - the package itself is broken
        print(json.dumps({"error": f"modelbuilder cannot be imported: {exc}"}))
        return
    request = json.load(sys.stdin)
    try:
        with tempfile.TemporaryDirectory(prefix="mb-probe-") as tmp:
            timing = time_pass(request["backbone"], int(request["size"]), request["pool"],
                               tuple(request["outputs"]), [Path(p) for p in request["paths"]], Path(tmp))
    except ImportError as exc:
        print(json.dumps({"error": f"the training extra is not installed: {exc}"}))
    except (ModelBuilderError, OSError, ValueError) as exc:
        print(json.dumps({"error": f"the probe failed: {exc}"}))
    else:
        print(json.dumps(timing.to_dict()))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (torch's is slow); the answer is written


if __name__ == "__main__":
    main()
