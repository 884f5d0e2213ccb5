"""The feature cache on disk: per-image arrays keyed by the image's sha256, memory-mapped, never loaded.

One folder per cached output (``features.cache_key``). Each *chunk* is two files:

- ``chunk-<id>.npy``: the values, one row per image (a plain ``.npy``, so it can be memory-mapped);
- ``chunk-<id>.json``: the manifest (``format_version``, ``hashes`` in row order, ``shape``, ``dtype``).

The ``.npy`` is written under a temporary name, flushed, fsynced and renamed first; the manifest is
written atomically last. A chunk exists only once its manifest does, so a crash at any point leaves
either a whole chunk or files no manifest names (ignored, and removed once they are old). Chunks are
never changed after they are written: readers that mapped one keep valid data even if another process
later removes it (POSIX keeps an unlinked file alive while it is mapped).

A run asks for the rows of its image list (``gather``). When one chunk holds exactly those images in that
order (the chunk a cold run just wrote, or a run's earlier assembly), that chunk *is* the answer: no
copy. Otherwise the rows are copied, a block at a time, into a new chunk in the run's order, and chunks
that the new one fully covers are removed, so a cache converges to one chunk per image set and a rerun
on the same images maps it directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import numpy as np

from ..errors import TrainingError
from ..fileio import atomic_write_text

logger = logging.getLogger(__name__)

CHUNK_FORMAT_VERSION = 2
#: Files no manifest names (a crash mid-write) are removed once this old: younger ones may be a chunk
#: another process is writing right now.
ORPHAN_AGE_S = 3600.0
#: Rows copied at a time when assembling: bounds the anonymous memory of an assembly.
COPY_BLOCK_ROWS = 2048
#: How arrays are mapped: copy-on-write, so the arrays are writable (``torch.from_numpy`` takes them
#: without copying or warning) while a stray in-place write changes this process's pages, never the cache.
MAP_MODE: Final = "c"


class ChunkWriter:
    """A chunk being written: fill ``values`` (a writable memory map of a temporary file), then
    ``commit``; ``abort`` (or an exception inside ``with``) removes the temporary file."""

    def __init__(self, cache: FeatureCache, hashes: Sequence[str], row_shape: tuple[int, ...]) -> None:
        self.cache = cache
        self.hashes = list(hashes)
        self.name = f"chunk-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self.tmp = cache.root / f".{self.name}.npy.tmp"
        try:
            cache.root.mkdir(parents=True, exist_ok=True)
            self.values: np.memmap = np.lib.format.open_memmap(
                self.tmp, mode="w+", dtype=cache.dtype, shape=(len(self.hashes), *row_shape))
        except OSError as exc:
            self._remove_tmp()
            raise _cache_error(cache.root, exc) from exc
        self.done = False

    def commit(self) -> np.ndarray:
        """Make the chunk visible to every reader; returns its rows, memory-mapped read-only."""
        final = self.cache.root / f"{self.name}.npy"
        try:
            self.values.flush()
            del self.values  # unmap before the rename (Windows cannot rename a mapped file)
            with open(self.tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self.tmp, final)
            manifest = {"format_version": CHUNK_FORMAT_VERSION, "npy": final.name, "hashes": self.hashes,
                        "dtype": np.dtype(self.cache.dtype).str}
            atomic_write_text(self.cache.root / f"{self.name}.json", json.dumps(manifest))
        except OSError as exc:
            self._remove_tmp()
            with contextlib.suppress(OSError):
                final.unlink()
            raise _cache_error(self.cache.root, exc) from exc
        self.done = True
        return self.cache._register(self.name, self.hashes, final)

    def abort(self) -> None:
        if not self.done:
            self.done = True
            if hasattr(self, "values"):
                del self.values
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is not None:
            self.abort()
        elif not self.done:
            self.commit()


def _cache_error(root: Path, exc: OSError) -> TrainingError:
    return TrainingError(f"Cannot write the feature cache in {root}: {exc}",
                         hint="Free disk space there, or point MODELBUILDER_HOME at a disk with room "
                              "(the cache needs about 4 bytes per feature value per image).")


class FeatureCache:
    """Per-image arrays (rows of chunks) keyed by the image's sha256; every chunk memory-mapped.

    ``get`` and ``gather`` return views of the mapped files: memory that the OS may drop and read
    again, not the process's own. Indexing a batch of rows copies only that batch.
    """

    def __init__(self, root: str | os.PathLike[str], dtype: type = np.float32) -> None:
        self.root = Path(root)
        self.dtype = dtype
        self._chunks: dict[str, tuple[list[str], np.ndarray]] = {}
        self._index: dict[str, tuple[str, int]] = {}
        if self.root.is_dir():
            self._load()

    # ------------------------------------------------------------------------------------- reading
    def _load(self) -> None:
        named: set[str] = set()
        for manifest in sorted(self.root.glob("chunk-*.json")):  # oldest first: newer rows win
            try:
                data = json.loads(manifest.read_text())
                named.add(str(data.get("npy")))
                if int(data.get("format_version", 0)) != CHUNK_FORMAT_VERSION:
                    continue
                if np.dtype(data["dtype"]) != np.dtype(self.dtype):
                    raise ValueError(f"dtype {data['dtype']}, expected {np.dtype(self.dtype).str}")
                self._register(manifest.stem, list(data["hashes"]), self.root / data["npy"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("Ignoring unreadable feature cache chunk %s: %s", manifest, exc)
        self._remove_orphans(named)

    def _register(self, name: str, hashes: list[str], path: Path) -> np.ndarray:
        values = np.load(path, mmap_mode=MAP_MODE)
        if values.shape[0] != len(hashes) or values.dtype != np.dtype(self.dtype):
            raise ValueError(f"{path.name} holds {values.shape[0]} rows of {values.dtype}, its manifest "
                             f"{len(hashes)} of {np.dtype(self.dtype)}")
        self._chunks[name] = (hashes, values)
        for row, image_hash in enumerate(hashes):
            self._index[image_hash] = (name, row)
        return values  # type: ignore[no-any-return]

    def _remove_orphans(self, named: set[str]) -> None:
        """Remove old files that no manifest names (left by a crash while writing a chunk)."""
        cutoff = time.time() - ORPHAN_AGE_S
        for path in [*self.root.glob("chunk-*.npy"), *self.root.glob(".chunk-*.tmp")]:
            if path.name in named:
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    logger.info("Removed an unfinished feature cache file %s", path)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, image_hash: object) -> bool:
        return image_hash in self._index

    def chunk_count(self) -> int:
        return len(self._chunks)

    def get(self, image_hash: str) -> np.ndarray | None:
        where = self._index.get(image_hash)
        return None if where is None else self._chunks[where[0]][1][where[1]]

    # ------------------------------------------------------------------------------------- writing
    def writer(self, hashes: Sequence[str], row_shape: tuple[int, ...]) -> ChunkWriter:
        """A new chunk for ``hashes`` whose rows have ``row_shape`` (fill ``.values``, then commit)."""
        return ChunkWriter(self, hashes, row_shape)

    def add(self, hashes: Sequence[str], values: np.ndarray) -> None:
        """Write rows held in memory as a new chunk."""
        if not len(hashes):
            return
        with self.writer(hashes, tuple(values.shape[1:])) as chunk:
            chunk.values[:] = values

    def gather(self, hashes: Sequence[str]) -> np.ndarray:
        """The rows of ``hashes`` (all present), in that order, as one memory-mapped array.

        An existing chunk that holds exactly them is returned as it is; otherwise they are assembled
        into a new chunk (see the module docstring).
        """
        exact = self._exact_chunk(hashes)
        if exact is not None:
            return exact
        first = self.get(hashes[0]) if hashes else None
        if first is None:
            return np.zeros((0,), dtype=self.dtype)
        chunk = self.writer(hashes, tuple(first.shape))
        with chunk:  # removes the temporary file if copying fails
            self._copy_rows(hashes, chunk.values)
            values = chunk.commit()
        self._remove_covered(chunk.name)
        return values

    def _exact_chunk(self, hashes: Sequence[str]) -> np.ndarray | None:
        if not hashes:
            return None
        name, row = self._index[hashes[0]]
        chunk_hashes, values = self._chunks[name]
        if row == 0 and len(chunk_hashes) == len(hashes) and all(
            a == b for a, b in zip(chunk_hashes, hashes, strict=True)
        ):
            return values
        return None

    def _copy_rows(self, hashes: Sequence[str], out: np.ndarray) -> None:
        """Copy rows into ``out`` grouped by source chunk, ``COPY_BLOCK_ROWS`` at a time."""
        sources: dict[str, tuple[list[int], list[int]]] = {}
        for position, image_hash in enumerate(hashes):
            name, row = self._index[image_hash]
            targets, rows = sources.setdefault(name, ([], []))
            targets.append(position)
            rows.append(row)
        for name, (targets, rows) in sources.items():
            values = self._chunks[name][1]
            for start in range(0, len(targets), COPY_BLOCK_ROWS):
                block_rows = np.asarray(rows[start:start + COPY_BLOCK_ROWS])
                block_targets = np.asarray(targets[start:start + COPY_BLOCK_ROWS])
                out[block_targets] = values[block_rows]

    def _remove_covered(self, newest: str) -> None:
        """Remove the chunks whose every row is also in ``newest`` (disk space; readers keep theirs)."""
        covered = set(self._chunks[newest][0])
        for name in [n for n in self._chunks if n != newest]:
            if set(self._chunks[name][0]) <= covered:
                for suffix in (".json", ".npy"):  # the manifest first: never a manifest without data
                    with contextlib.suppress(OSError):
                        (self.root / f"{name}{suffix}").unlink()
                del self._chunks[name]

