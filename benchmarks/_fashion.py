"""Fashion-MNIST as a user would have it: one PNG folder per label (written once, cached).

The raw data comes from the Debian package ``dataset-fashion-mnist`` (installed on demand), or any
folder holding the four ``*-ubyte.gz`` files (``--source``; the tests generate a tiny one).
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import CACHE_DIR, stratified_subset
from PIL import Image

logger = logging.getLogger("benchmarks")

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
          "Ankle_boot"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def ensure_source(source: Path | None) -> Path:
    """The folder with the idx files; installs the Debian package when the default folder is missing.

    Raises:
        FileNotFoundError: the files are still missing (the message says how to get them).
    """
    folder = source or DEBIAN_DIR
    needed = [folder / name for pair in FILES.values() for name in pair]
    if source is None and not all(p.is_file() for p in needed) and shutil.which("apt-get"):
        logger.info("installing %s with apt-get", DEBIAN_PACKAGE)
        install = ["apt-get", "install", "-y", DEBIAN_PACKAGE]
        if subprocess.run(install, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], check=False)
            subprocess.run(install, check=False)
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files are missing: {', '.join(missing)}. Install them as root with "
            f"'apt-get install -y {DEBIAN_PACKAGE}', or give --source DIR holding the four *-ubyte.gz files."
        )
    return folder


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed) as a numpy array."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed IDX file (used to make tiny test data)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def load_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = FILES[split]
    return read_idx(source / images_file), read_idx(source / labels_file)


def png_folder(source: Path, split: str, cache_dir: Path = CACHE_DIR) -> tuple[Path, list[Path], np.ndarray]:
    """``<cache>/<split>/<label>/<index>.png`` for every image of the split (written once).

    Returns (folder, image paths in IDX order, labels in IDX order).
    """
    images, labels = load_split(source, split)
    tag = f"{source.resolve()}:{len(labels)}:{int(labels.astype(np.int64).sum())}"
    folder = cache_dir / "fashion-mnist" / split
    paths = [folder / LABELS[int(label)] / f"{i:05d}.png" for i, label in enumerate(labels)]
    marker = folder.with_name(f"{split}.complete.json")  # outside the folder the trainer scans
    if marker.is_file() and json.loads(marker.read_text()).get("tag") == tag:
        return folder, paths, labels
    logger.info("writing %d %s images as PNG folders under %s", len(labels), split, folder)
    if folder.exists():
        shutil.rmtree(folder)
    marker.unlink(missing_ok=True)
    for name in LABELS:
        (folder / name).mkdir(parents=True)

    def save(i: int) -> None:
        Image.fromarray(images[i], "L").save(paths[i], "PNG")

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(save, range(len(labels)), chunksize=256))
    marker.write_text(json.dumps({"tag": tag, "count": len(labels)}))
    return folder, paths, labels


def subset_table(paths: list[Path], labels: np.ndarray, indices: np.ndarray, name: str,
                 cache_dir: Path = CACHE_DIR) -> Path:
    """A CSV (ImagePath,Label) naming the chosen images: a training source without copying files."""
    table = cache_dir / "fashion-mnist" / "subsets" / f"{name}.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImagePath", "Label"])
        for i in indices:
            writer.writerow([str(paths[int(i)]), LABELS[int(labels[int(i)])]])
    return table


def training_source(source: Path, limit: int | None, seed: int, cache_dir: Path = CACHE_DIR,
                    ) -> tuple[Path, list[Path], np.ndarray]:
    """The training data to give modelbuilder: the full PNG folder, or a CSV of a stratified subset.

    Returns (data path, chosen image paths, their label indices).
    """
    folder, paths, labels = png_folder(source, "train", cache_dir)
    chosen = stratified_subset(labels, limit, seed)
    if len(chosen) == len(labels):
        return folder, paths, labels
    table = subset_table(paths, labels, chosen, f"train-{len(chosen)}-seed{seed}", cache_dir)
    return table, [paths[int(i)] for i in chosen], labels[chosen]


def official_test_images(source: Path, limit: int | None, seed: int, cache_dir: Path = CACHE_DIR,
                ) -> tuple[list[Path], np.ndarray]:
    """The official test images as PNG files (a stratified subset with ``limit``) and their labels."""
    _, paths, labels = png_folder(source, "test", cache_dir)
    chosen = stratified_subset(labels, limit, seed)
    return [paths[int(i)] for i in chosen], labels[chosen]


def make_tiny_source(folder: Path, train: int = 300, test: int = 100, seed: int = 0) -> Path:
    """Four IDX files with learnable 28x28 images (class-specific bars), for tests of the benchmarks."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        labels = np.arange(count) % len(LABELS)
        rng.shuffle(labels)
        images = rng.normal(40, 20, (count, 28, 28))
        for i, label in enumerate(labels):
            row = 2 + int(label) * 2
            images[i, row:row + 3, 4:24] += 160
            images[i, 4:24, row:row + 2] += 80
        images_file, labels_file = FILES[split]
        write_idx(folder / images_file, np.clip(images, 0, 255).astype(np.uint8))
        write_idx(folder / labels_file, labels.astype(np.uint8))
    return folder
