"""Tiny, deterministic, generated test data: never downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLORS = [(220, 40, 40), (40, 200, 60), (40, 70, 220), (230, 200, 30), (160, 40, 200), (30, 200, 200)]


def make_image(label_index: int, index: int, size: int = 32, seed: int = 0) -> Image.Image:
    """A learnable image: a class-specific colour and shape plus noise."""
    rng = np.random.default_rng(seed * 100_003 + label_index * 1009 + index)
    base = np.array(COLORS[label_index % len(COLORS)], dtype=np.float32)
    pixels = np.tile(base, (size, size, 1)) * 0.6 + rng.normal(0, 18, (size, size, 3))
    stripe = max(1, size // (label_index + 2))
    pixels[::stripe, :, :] = 255 - pixels[::stripe, :, :]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def make_image_folder(
    root: Path, classes: int = 3, per_class: int = 6, size: int = 32, fmt: str = "PNG", seed: int = 0
) -> Path:
    """``root/<label>/<label>_<i>.png`` with ``classes`` labels and ``per_class`` images each."""
    root.mkdir(parents=True, exist_ok=True)
    suffix = {"PNG": ".png", "JPEG": ".jpg"}[fmt]
    for c in range(classes):
        folder = root / f"label{c}"
        folder.mkdir(exist_ok=True)
        for i in range(per_class):
            make_image(c, i, size, seed).save(folder / f"label{c}_{i}{suffix}", fmt)
    return root
