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

    def __init__(self, root: Path, dtype: type = np.float32) -> None:
        self.root = root
        self.dtype = dtype
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
        np.savez(buffer, hashes=np.asarray(list(hashes)), features=features.astype(self.dtype),
                 format_version=np.asarray(CACHE_FORMAT_VERSION))
        atomic_write_bytes(self.root / f"chunk-{int(time.time())}-{uuid.uuid4().hex[:8]}.npz",
                           buffer.getvalue())
        for h, row in zip(hashes, features.astype(self.dtype), strict=True):
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


def run_onnx_outputs(session: object, paths: Sequence[Path], spec: PreprocessSpec,
                     output_names: Sequence[str], *, batch_size: int = 16,
                     progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                     dtypes: Sequence[type] | None = None) -> list[np.ndarray]:
    """Run an ONNX model over images (decoded in threads, one batch ahead); one array per output."""
    outputs: list[list[np.ndarray]] = [[] for _ in output_names]
    dtypes = dtypes or [np.float32] * len(output_names)
    done = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in decode_batches(paths, spec, batch_size, pool):
            if should_stop is not None and should_stop():
                raise InterruptedError("feature extraction stopped")
            results = session.run(list(output_names), {"input1": normalize(batch, spec)})  # type: ignore[attr-defined]
            for store, result, dtype in zip(outputs, results, dtypes, strict=True):
                store.append(result.astype(dtype))
            done += len(batch)
            if progress is not None:
                progress(done, len(paths))
    return [np.concatenate(parts) if parts else np.zeros((0,), dtype)
            for parts, dtype in zip(outputs, dtypes, strict=True)]


def extract_cached(session: object, paths: Sequence[Path], hashes: Sequence[str], spec: PreprocessSpec,
                   caches: dict[str, FeatureCache], *, batch_size: int = 16,
                   progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                   ) -> tuple[dict[str, np.ndarray], int]:
    """Every output in ``caches`` for every image, computing only images missing from a cache.

    Returns ``({output_name: [N, ...] array}, number of images computed)``.
    """
    names = list(caches)
    missing = [i for i, h in enumerate(hashes) if any(caches[n].get(h) is None for n in names)]
    cached_count = len(hashes) - len(missing)

    def report(done: int, _total: int) -> None:
        if progress is not None:
            progress(cached_count + done, len(hashes))

    if missing:
        fresh = run_onnx_outputs(session, [paths[i] for i in missing], spec, names, batch_size=batch_size,
                                 progress=report, should_stop=should_stop,
                                 dtypes=[caches[n].dtype for n in names])
        for name, values in zip(names, fresh, strict=True):
            caches[name].add([hashes[i] for i in missing], values)
    elif progress is not None:
        progress(len(hashes), len(hashes))
    result = {}
    for name in names:
        rows = [caches[name].get(h) for h in hashes]
        result[name] = np.stack(rows) if rows else np.zeros((0,), caches[name].dtype)  # type: ignore[arg-type]
    return result, len(missing)


def feature_cache_for(backbone: str, weights_id: str, spec: PreprocessSpec, output: str,
                      dtype: type = np.float32) -> FeatureCache:
    key = cache_key(f"{backbone}/{output}", weights_id, spec)
    return FeatureCache(settings.features_cache_dir() / key, dtype)
