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
    """Per-image arrays keyed by the image's sha256.

    Chunks stay as loaded (one array each); the index maps a hash to a row of a chunk, so looking
    rows up never copies them and memory holds each cached value once.
    """

    def __init__(self, root: Path, dtype: type = np.float32) -> None:
        self.root = root
        self.dtype = dtype
        self._chunks: list[np.ndarray] = []
        self._index: dict[str, tuple[int, int]] = {}
        if root.is_dir():
            for chunk in sorted(root.glob("chunk-*.npz")):
                try:
                    with np.load(chunk) as data:
                        if int(data["format_version"]) != CACHE_FORMAT_VERSION:
                            continue
                        self._append(data["hashes"].tolist(), data["features"].astype(dtype, copy=False))
                except (OSError, ValueError, KeyError) as exc:
                    logger.warning("Ignoring unreadable feature cache chunk %s: %s", chunk, exc)

    def _append(self, hashes: Sequence[str], values: np.ndarray) -> None:
        number = len(self._chunks)
        self._chunks.append(values)
        for row, image_hash in enumerate(hashes):
            self._index[image_hash] = (number, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, image_hash: object) -> bool:
        return image_hash in self._index

    def get(self, image_hash: str) -> np.ndarray | None:
        where = self._index.get(image_hash)
        return None if where is None else self._chunks[where[0]][where[1]]

    def add(self, hashes: Sequence[str], features: np.ndarray) -> None:
        if not len(hashes):
            return
        values: np.ndarray = features.astype(self.dtype, copy=False)
        buffer = io.BytesIO()
        np.savez(buffer, hashes=np.asarray(list(hashes)), features=values,
                 format_version=np.asarray(CACHE_FORMAT_VERSION))
        atomic_write_bytes(self.root / f"chunk-{int(time.time())}-{uuid.uuid4().hex[:8]}.npz",
                           buffer.getvalue())
        self._append(hashes, values)

    def gather(self, hashes: Sequence[str]) -> np.ndarray:
        """Rows for ``hashes`` (all present) as one array (a copy, unless one chunk holds exactly them)."""
        if hashes:
            number, row = self._index[hashes[0]]
            chunk = self._chunks[number]
            if row == 0 and len(chunk) == len(hashes) and all(
                self._index[h] == (number, i) for i, h in enumerate(hashes)
            ):
                return chunk  # exactly one chunk in order (a cold cache): no copy
        first = self.get(hashes[0]) if hashes else None
        shape = (len(hashes),) + (first.shape if first is not None else ())
        out: np.ndarray = np.empty(shape, dtype=self.dtype)
        for position, image_hash in enumerate(hashes):
            number, row = self._index[image_hash]
            out[position] = self._chunks[number][row]
        return out


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
    """Run an ONNX model over images (decoded in threads, one batch ahead); one array per output.

    Results go straight into preallocated arrays, so peak memory is the outputs themselves.
    """
    dtypes = dtypes or [np.float32] * len(output_names)
    outputs: list[np.ndarray] | None = None
    done = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in decode_batches(paths, spec, batch_size, pool):
            if should_stop is not None and should_stop():
                raise InterruptedError("feature extraction stopped")
            results = session.run(list(output_names), {"input1": normalize(batch, spec)})  # type: ignore[attr-defined]
            if outputs is None:
                outputs = [np.empty((len(paths),) + r.shape[1:], dtype=d) for r, d in zip(results, dtypes,
                                                                                        strict=True)]
            for target, result in zip(outputs, results, strict=True):
                target[done:done + len(batch)] = result
            done += len(batch)
            if progress is not None:
                progress(done, len(paths))
    return outputs or [np.zeros((0,), d) for d in dtypes]


def extract_cached(session: object, paths: Sequence[Path], hashes: Sequence[str], spec: PreprocessSpec,
                   caches: dict[str, FeatureCache], *, batch_size: int = 16,
                   progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                   ) -> tuple[dict[str, np.ndarray], int]:
    """Every output in ``caches`` for every image, computing only images missing from a cache.

    Returns ``({output_name: [N, ...] array}, number of images computed)``.
    """
    names = list(caches)
    missing = [i for i, h in enumerate(hashes) if any(h not in caches[n] for n in names)]
    cached_count = len(hashes) - len(missing)

    def report(done: int, _total: int) -> None:
        if progress is not None:
            progress(cached_count + done, len(hashes))

    if missing:
        missing_hashes = list(dict.fromkeys(hashes[i] for i in missing))
        first_path = {h: paths[i] for i, h in reversed(list(enumerate(hashes)))}
        fresh = run_onnx_outputs(session, [first_path[h] for h in missing_hashes], spec, names,
                                 batch_size=batch_size, progress=report, should_stop=should_stop,
                                 dtypes=[caches[n].dtype for n in names])
        for name, values in zip(names, fresh, strict=True):
            caches[name].add(missing_hashes, values)
        del fresh
    elif progress is not None:
        progress(len(hashes), len(hashes))
    return {name: caches[name].gather(hashes) for name in names}, len(missing)


def feature_cache_for(backbone: str, weights_id: str, spec: PreprocessSpec, output: str,
                      dtype: type = np.float32) -> FeatureCache:
    key = cache_key(f"{backbone}/{output}", weights_id, spec)
    return FeatureCache(settings.features_cache_dir() / key, dtype)
