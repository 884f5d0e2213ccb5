"""A photo task built offline: few RGB images per label at 160 px, train and test from disjoint regions.

The sources are the photos that ship inside scikit-image (``skimage/data``: astronaut, chelsea the
cat, coffee, the Hubble deep field, an immunohistochemistry slide, a motorcycle, a retina, a rocket,
and three grey textures: brick, grass, gravel) and scikit-learn (``sklearn/datasets/images``:
china, flower). No download: the files are read from the installed packages.

The label is the source photo. Each photo is cut into a 2x2 grid; the top-left and bottom-right
quadrants give the training images, the other two the test images, so no test pixel was ever seen
in training: a model must recognise a scene (its textures, colours, objects) from other parts of it,
not memorise crops. Every image is a random square crop (50-100% of the quadrant's shorter side),
randomly mirrored, with random brightness, contrast and saturation (so colour alone is not enough),
resized to ``size`` px and saved as JPEG.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import CACHE_DIR
from PIL import Image, ImageEnhance

logger = logging.getLogger("benchmarks")

FORMAT_VERSION = 1  # bump when the generation below changes: cached folders are rebuilt


def _skimage_file(name: str) -> Callable[[], Path]:
    def find() -> Path:
        import skimage

        return Path(skimage.__file__).parent / "data" / name

    return find


def _sklearn_file(name: str) -> Callable[[], Path]:
    def find() -> Path:
        import sklearn

        return Path(sklearn.__file__).parent / "datasets" / "images" / name

    return find


SOURCES: dict[str, Callable[[], Path]] = {
    "astronaut": _skimage_file("astronaut.png"),
    "cat": _skimage_file("chelsea.png"),
    "coffee": _skimage_file("coffee.png"),
    "hubble": _skimage_file("hubble_deep_field.jpg"),
    "ihc_slide": _skimage_file("ihc.png"),
    "motorcycle": _skimage_file("motorcycle_left.png"),
    "retina": _skimage_file("retina.jpg"),
    "rocket": _skimage_file("rocket.jpg"),
    "brick": _skimage_file("brick.png"),
    "grass": _skimage_file("grass.png"),
    "gravel": _skimage_file("gravel.png"),
    "china": _sklearn_file("china.jpg"),
    "flower": _sklearn_file("flower.jpg"),
}
LABELS = list(SOURCES)
SOURCES_INDEX = {label: i for i, label in enumerate(SOURCES)}
# Quadrants as (row, column): the diagonal pairs give disjoint training and test regions.
REGIONS = {"train": ((0, 0), (1, 1)), "test": ((0, 1), (1, 0))}


def load_source(label: str) -> Image.Image:
    """The source photo of ``label`` as RGB.

    Raises:
        FileNotFoundError: the installed scikit-image / scikit-learn lacks the file (the message says
            which package to install).
    """
    path = SOURCES[label]()
    if not path.is_file():
        raise FileNotFoundError(
            f"Photo '{path}' for label '{label}' is missing. The photos benchmark reads the sample photos "
            "shipped with scikit-image and scikit-learn: pip install scikit-image scikit-learn")
    with Image.open(path) as img:
        return img.convert("RGB")


def random_view(photo: Image.Image, region: tuple[int, int], rng: np.random.Generator,
                size: int) -> Image.Image:
    """One training or test image: a random crop inside ``region`` (a quadrant), jittered, resized."""
    width, height = photo.size
    left, top = region[1] * width // 2, region[0] * height // 2
    quad_w, quad_h = width // 2, height // 2
    side = int(min(quad_w, quad_h) * rng.uniform(0.5, 1.0))
    x = left + int(rng.integers(0, quad_w - side + 1))
    y = top + int(rng.integers(0, quad_h - side + 1))
    view = photo.crop((x, y, x + side, y + side))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.7, 1.3))
    view = ImageEnhance.Contrast(view).enhance(rng.uniform(0.7, 1.3))
    view = ImageEnhance.Color(view).enhance(rng.uniform(0.6, 1.4))
    return view.resize((size, size), Image.Resampling.BICUBIC)


def build_photos(labels: list[str], train_per_label: int, test_per_label: int, size: int, seed: int,
                 cache_dir: Path = CACHE_DIR) -> tuple[Path, tuple[list[Path], np.ndarray],
                                                       tuple[list[Path], np.ndarray]]:
    """``<cache>/photos/<config>/{train,test}/<label>/<n>.jpg`` (written once per configuration).

    Returns (training folder, (training paths, label indices), (test paths, label indices)); the
    indices point into ``labels``.
    """
    unknown = sorted(set(labels) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown photo labels {unknown}; choose from {', '.join(SOURCES)}")
    config = {"version": FORMAT_VERSION, "labels": labels, "train": train_per_label, "test": test_per_label,
              "size": size, "seed": seed}
    name = f"v{FORMAT_VERSION}-{len(labels)}x{train_per_label}+{test_per_label}-{size}px-seed{seed}"
    root = cache_dir / "photos" / name
    counts = {"train": train_per_label, "test": test_per_label}
    splits = {split: ([root / split / label / f"{i:03d}.jpg" for label in labels for i in range(count)],
                      np.repeat(np.arange(len(labels)), count))
              for split, count in counts.items()}
    marker = root.with_name(f"{name}.complete.json")  # outside the folder the trainer scans
    if marker.is_file() and json.loads(marker.read_text()) == config:
        return root / "train", splits["train"], splits["test"]
    logger.info("writing the photo task (%d labels, %d + %d images per label) under %s", len(labels),
                train_per_label, test_per_label, root)
    shutil.rmtree(root, ignore_errors=True)
    for label in labels:
        photo = load_source(label)
        # One generator per label and split: the images of a label do not change with the label list.
        for split, count in counts.items():
            rng = np.random.default_rng([seed, SOURCES_INDEX[label], 0 if split == "train" else 1])
            folder = root / split / label
            folder.mkdir(parents=True)
            regions = REGIONS[split]
            for i in range(count):
                view = random_view(photo, regions[i % len(regions)], rng, size)
                view.save(folder / f"{i:03d}.jpg", "JPEG", quality=90)
    marker.write_text(json.dumps(config))
    return root / "train", splits["train"], splits["test"]

