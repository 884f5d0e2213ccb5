"""Backbone features, computed once with onnxruntime and cached by image content.

The cache lives under ``settings.features_cache_dir()/<key>/`` where the key hashes the backbone,
its weights and the preprocessing; ``feature_cache.FeatureCache`` keeps it as memory-mapped ``.npy``
chunks. A run adds one chunk for the images it had to compute (written straight from the feature pass
into the mapped file), so a second run on the same data (or the same data plus new images) computes
only what is new, and no run holds the cached arrays in its own memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import settings
from ..pipeline.preprocess import PreprocessSpec, normalize, to_uint8
from .feature_cache import CHUNK_FORMAT_VERSION, ChunkWriter, FeatureCache

CACHE_FORMAT_VERSION = CHUNK_FORMAT_VERSION
ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]
#: Gives the array an output is written into: (output number, shape of all its rows, dtype) -> array.
AllocateFn = Callable[[int, tuple[int, ...], type], np.ndarray]


def cache_key(backbone: str, weights_id: str, spec: PreprocessSpec) -> str:
    payload = json.dumps({"backbone": backbone, "weights": weights_id, "spec": spec.to_dict(),
                          "v": CACHE_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


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


def _allocate_in_memory(_output: int, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def run_onnx_outputs(session: object, paths: Sequence[Path], spec: PreprocessSpec,
                     output_names: Sequence[str], *, batch_size: int = 16,
                     progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                     dtypes: Sequence[type] | None = None,
                     allocate: AllocateFn | None = None) -> list[np.ndarray]:
    """Run an ONNX model over images (decoded in threads, one batch ahead); one array per output.

    Results go straight into arrays made once the first batch gives their shapes: in memory, or
    wherever ``allocate`` puts them (the feature cache's memory-mapped chunk files), so the pass itself
    holds only a batch or two.
    """
    dtypes = dtypes or [np.float32] * len(output_names)
    allocate = allocate or _allocate_in_memory
    outputs: list[np.ndarray] | None = None
    done = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in decode_batches(paths, spec, batch_size, pool):
            if should_stop is not None and should_stop():
                raise InterruptedError("feature extraction stopped")
            results = session.run(list(output_names), {"input1": normalize(batch, spec)})  # type: ignore[attr-defined]
            if outputs is None:
                outputs = [allocate(number, (len(paths),) + r.shape[1:], d)
                           for number, (r, d) in enumerate(zip(results, dtypes, strict=True))]
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

    New rows are written straight into new cache chunks (memory-mapped files), committed only when
    the pass completes; a stopped or failed pass leaves no chunk behind. Returns
    ``({output_name: [N, ...] memory-mapped array}, number of images computed)``.
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
        writers: list[ChunkWriter] = []

        def into_chunk(number: int, shape: tuple[int, ...], _dtype: type) -> np.ndarray:
            writers.append(caches[names[number]].writer(missing_hashes, shape[1:]))
            return writers[-1].values

        try:
            run_onnx_outputs(session, [first_path[h] for h in missing_hashes], spec, names,
                             batch_size=batch_size, progress=report, should_stop=should_stop,
                             dtypes=[caches[n].dtype for n in names], allocate=into_chunk)
            for writer in writers:
                writer.commit()
        finally:
            for writer in writers:
                writer.abort()  # a no-op for committed chunks
    elif progress is not None:
        progress(len(hashes), len(hashes))
    return {name: caches[name].gather(hashes) for name in names}, len(missing)


def feature_cache_for(backbone: str, weights_id: str, spec: PreprocessSpec, output: str,
                      dtype: type = np.float32) -> FeatureCache:
    key = cache_key(f"{backbone}/{output}", weights_id, spec)
    return FeatureCache(settings.features_cache_dir() / key, dtype)
