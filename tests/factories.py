"""Tiny, deterministic, generated test data: never downloaded."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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


# ------------------------------------------------------------------ awkward and bad images (data doctor)


def save_image_bytes(img: Image.Image, fmt: str, **params: object) -> bytes:
    """``img`` encoded as ``fmt`` (PNG, JPEG, ...), in memory."""
    import io

    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def write_truncated(path: Path, fmt: str = "PNG", keep: float = 0.6, size: int = 64) -> Path:
    """An image file cut off after ``keep`` of its bytes (a broken download)."""
    data = save_image_bytes(make_image(0, 0, size), fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_png_bomb(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A valid all-black 1-bit PNG whose header claims ``width`` x ``height`` pixels.

    Written row by row through zlib, so a 400-megapixel bomb takes ~50 kB on disk and no big buffer.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bomb_bytes(width, height))
    return path


@functools.lru_cache(maxsize=4)
def _png_bomb_bytes(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed 1-bit pixels
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def write_exif_rotated_jpeg(path: Path, width: int = 40, height: int = 20, orientation: int = 6) -> Path:
    """A ``width`` x ``height`` JPEG (as stored) with an EXIF orientation tag."""
    img = make_image(1, 0, max(width, height)).crop((0, 0, width, height))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", exif=exif.tobytes())
    return path


def write_mode_image(path: Path, mode: str, size: int = 16, fmt: str = "PNG") -> Path:
    """An image stored in a non-RGB mode: CMYK (JPEG), P with transparency, I;16, RGBA, LA, L."""
    rgb = make_image(2, 0, size)
    if mode == "CMYK":
        img = rgb.convert("CMYK")
        fmt = "JPEG"
    elif mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        img.info["transparency"] = 0
    elif mode == "I;16":
        ramp = np.linspace(0, 65535, size * size, dtype=np.float64).reshape(size, size)
        img = Image.fromarray(ramp.astype(np.uint16))
    else:
        img = rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    params: dict[str, object] = {"transparency": 0} if mode == "P" else {}
    img.save(path, fmt, **params)
    return path


def load_test_module(relative_path: str, module_name: str) -> ModuleType:
    """A helper module of another test folder, loaded by path (the test folders are not packages)."""
    path = Path(__file__).resolve().parent / relative_path
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
