"""Backbone features, computed once with onnxruntime and cached by image content.

The cache lives under ``settings.features_cache_dir()/<key>/`` where the key hashes the backbone,
its weights and the preprocessing. Each folder holds ``chunk-*.npz`` files (``hashes``, ``features``,
``format_version``); a run adds one chunk for the images it had to compute, so a second run on the
same data (or the same data plus new images) computes only what is new.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import settings
from ..fileio import atomic_write_bytes
from ..pipeline.preprocess import PreprocessSpec, normalize, to_uint8

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


def cache_key(backbone: str, weights_id: str, spec: PreprocessSpec) -> str:
    payload = json.dumps({"backbone": backbone, "weights": weights_id, "spec": spec.to_dict(),
                          "v": CACHE_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class FeatureCache:
    """Per-image feature vectors keyed by the image's sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rows: dict[str, np.ndarray] = {}
        if root.is_dir():
            for chunk in sorted(root.glob("chunk-*.npz")):
                try:
                    with np.load(chunk) as data:
                        if int(data["format_version"]) != CACHE_FORMAT_VERSION:
                            continue
                        for h, row in zip(data["hashes"].tolist(), data["features"], strict=True):
                            self._rows[h] = row
                except (OSError, ValueError, KeyError) as exc:
                    logger.warning("Ignoring unreadable feature cache chunk %s: %s", chunk, exc)

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, image_hash: str) -> np.ndarray | None:
        return self._rows.get(image_hash)

    def add(self, hashes: Sequence[str], features: np.ndarray) -> None:
        if not len(hashes):
            return
        buffer = io.BytesIO()
        np.savez(buffer, hashes=np.asarray(list(hashes)), features=features.astype(np.float32),
                 format_version=np.asarray(CACHE_FORMAT_VERSION))
        atomic_write_bytes(self.root / f"chunk-{int(time.time())}-{uuid.uuid4().hex[:8]}.npz",
                           buffer.getvalue())
        for h, row in zip(hashes, features, strict=True):
            self._rows[h] = row


def decode_batches(paths: Sequence[Path], spec: PreprocessSpec, batch_size: int,
                   pool: ThreadPoolExecutor) -> Iterator[np.ndarray]:
    """Yield uint8 ``[B,H,W,3]`` batches, decoding the next batch while the caller works on this one."""
    starts = list(range(0, len(paths), batch_size))
    if not starts:
        return
    pending = [pool.submit(to_uint8, p, spec) for p in paths[starts[0]:starts[0] + batch_size]]
    for index in range(len(starts)):
        current = pending
        if index + 1 < len(starts):
            nxt = starts[index + 1]
            pending = [pool.submit(to_uint8, p, spec) for p in paths[nxt:nxt + batch_size]]
        yield np.stack([f.result() for f in current])


def run_onnx_features(session: object, paths: Sequence[Path], spec: PreprocessSpec, *,
                      batch_size: int = 16, progress: ProgressFn | None = None,
                      should_stop: StopFn | None = None) -> np.ndarray:
    """Run an ONNX feature extractor over images; returns float32 ``[N, D]``."""
    outputs: list[np.ndarray] = []
    done = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in decode_batches(paths, spec, batch_size, pool):
            if should_stop is not None and should_stop():
                raise InterruptedError("feature extraction stopped")
            outputs.append(session.run(["output1"], {"input1": normalize(batch, spec)})[0])  # type: ignore[attr-defined]
            done += len(batch)
            if progress is not None:
                progress(done, len(paths))
    return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros((0, 0), np.float32)


def extract_features(session: object, paths: Sequence[Path], hashes: Sequence[str], spec: PreprocessSpec,
                     cache: FeatureCache | None, *, batch_size: int = 16,
                     progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                     ) -> tuple[np.ndarray, int]:
    """Features for every image, from the cache where present. Returns (features, computed_count)."""
    missing = [i for i, h in enumerate(hashes) if cache is None or cache.get(h) is None]
    cached_count = len(hashes) - len(missing)

    def report(done: int, _total: int) -> None:
        if progress is not None:
            progress(cached_count + done, len(hashes))

    fresh = run_onnx_features(session, [paths[i] for i in missing], spec, batch_size=batch_size,
                              progress=report, should_stop=should_stop)
    if cache is not None and len(missing):
        cache.add([hashes[i] for i in missing], fresh)
    if progress is not None and not missing:
        progress(len(hashes), len(hashes))
    if cache is None:
        return fresh, len(missing)
    rows = [cache.get(h) for h in hashes]
    return np.stack(rows).astype(np.float32), len(missing)  # type: ignore[arg-type]


def feature_cache_for(backbone: str, weights_id: str, spec: PreprocessSpec) -> FeatureCache:
    return FeatureCache(settings.features_cache_dir() / cache_key(backbone, weights_id, spec))
