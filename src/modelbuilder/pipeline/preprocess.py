"""Image decoding and preprocessing shared by training, prediction and the generated code.

This module needs only numpy and Pillow. Training uses exactly these functions for evaluation
preprocessing, so what the model sees at prediction time is what it saw during validation.
The code generator copies this file verbatim into the generated ``<Name>.Model`` package.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Pillow's decompression-bomb guard stays on: an image above MAX_IMAGE_PIXELS warns, above twice
# that it raises. We turn the warning into an error too, so a bomb never reaches the model.
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, Image.Image, np.ndarray]

_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageDecodeError(ValueError):
    """The source is not a decodable, safe image. (The package maps it to modelbuilder.ImageError.)"""


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input tensor.

    The image is converted to RGB (see ``to_rgb``), its shorter side resized to ``resize_size`` with
    ``interpolation``, centre-cropped to ``crop_size`` x ``crop_size``, scaled to 0..1, then
    normalised per channel: ``(x - mean) / std``. For the offline EfficientNet-Lite0 weights
    mean = 127/255 and std = 128/255, i.e. ``(pixel - 127) / 128``.
    """

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    color: str = "RGB"
    layout: str = "NCHW"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        return cls(
            resize_size=int(data["resize_size"]),
            crop_size=int(data["crop_size"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            interpolation=str(data.get("interpolation", "bilinear")),
            color=str(data.get("color", "RGB")),
            layout=str(data.get("layout", "NCHW")),
        )

    def with_size(self, size: int) -> PreprocessSpec:
        return PreprocessSpec(size, size, self.mean, self.std, self.interpolation, self.color)


def open_image(source: ImageSource) -> Image.Image:
    """Decode ``source`` (path, bytes, PIL image or HxW / HxWxC uint8 array) into an RGB image.

    EXIF orientation is applied. Raises ImageDecodeError for anything that is not a safe image.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        return to_rgb(_image_from_array(source))
    if isinstance(source, (bytes, bytearray)):
        stream: Any = io.BytesIO(bytes(source))
        label = "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"Image file '{path}' does not exist or is not a file.")
        stream = path
        label = str(path)
    else:
        raise ImageDecodeError(
            f"Cannot read an image from a {type(source).__name__}; give a path, bytes, "
            "a PIL image or a numpy array."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as img:
                # The warnings filter is process-wide state that threads (predict_batch, the scan)
                # change under each other: the header's size is checked here too, before decoding.
                _refuse_bomb(img.size)
                img.load()
                # Decoded here, so ours to change: the orientation is applied in place, where the
                # default of exif_transpose copies every pixel even when there is nothing to turn.
                # (Leaving the with block closes the file only; the loaded pixels stay.)
                ImageOps.exif_transpose(img, in_place=True)
                return _convert_to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{label} is too large to decode safely ({exc}).") from exc
    except Image.DecompressionBombWarning as exc:  # raised when warnings are errors
        raise ImageDecodeError(f"{label} is too large to decode safely ({exc}).") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{label} is not a readable image: {exc}") from exc


def _refuse_bomb(size: tuple[int, int]) -> None:
    """Raises Pillow's DecompressionBombError (as Pillow words it) for more than MAX_IMAGE_PIXELS."""
    pixels = size[0] * size[1]
    if pixels > MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"Image size ({pixels} pixels) exceeds limit of {MAX_IMAGE_PIXELS} pixels, could be "
            "decompression bomb DOS attack.")


def _image_from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        data = array
    elif array.ndim == 3 and array.shape[2] in (1, 3, 4):
        data = array[:, :, 0] if array.shape[2] == 1 else array
    else:
        raise ImageDecodeError(
            f"A numpy image must have shape HxW, HxWx1, HxWx3 or HxWx4. Got {array.shape} instead."
        )
    if data.dtype != np.uint8:
        if np.issubdtype(data.dtype, np.floating) and data.size and float(np.nanmax(data)) <= 1.0:
            data = data * 255.0
        data = np.clip(np.nan_to_num(data), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(data))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, explicitly and the same way everywhere.

    - EXIF orientation is applied first.
    - Alpha (RGBA, LA, PA, palette with transparency) is composited onto white.
    - 16-bit and 32-bit greyscale (I;16, I) are scaled from their full range to 0..255.
    - CMYK, YCbCr, LAB, HSV and palette images go through Pillow's conversion to RGB.

    ``img`` itself is never changed.
    """
    return _convert_to_rgb(ImageOps.exif_transpose(img))


def _convert_to_rgb(img: Image.Image) -> Image.Image:
    """to_rgb() after the orientation is applied; returns ``img`` itself when it is RGB already."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "F":
        array = np.asarray(img, dtype=np.float64)
        top = 1.0 if float(array.max()) <= 1.0 else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "1":
        img = img.convert("L")
    return img.convert("RGB")


def resize_and_crop(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Shorter side to ``spec.resize_size``, then a centred ``crop_size`` square."""
    width, height = img.size
    scale = spec.resize_size / min(width, height)
    new_w = max(spec.crop_size, round(width * scale))
    new_h = max(spec.crop_size, round(height * scale))
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), _RESAMPLING[spec.interpolation])
    left = (new_w - spec.crop_size) // 2
    top = (new_h - spec.crop_size) // 2
    if (left, top, new_w, new_h) != (0, 0, spec.crop_size, spec.crop_size):
        img = img.crop((left, top, left + spec.crop_size, top + spec.crop_size))
    return img


def to_uint8(source: ImageSource, spec: PreprocessSpec) -> np.ndarray:
    """Decode, convert and resize: an HxWx3 uint8 array (what caches store)."""
    return np.asarray(resize_and_crop(open_image(source), spec), dtype=np.uint8)


_SCALE = np.float32(1.0 / 255.0)


@functools.lru_cache(maxsize=16)
def _channel_constants(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``[3, 1, 1]`` mean and std, built once per spec (read-only: they are shared)."""
    arrays = []
    for values in (mean, std):
        array = np.asarray(values, dtype=np.float32).reshape(3, 1, 1)
        array.setflags(write=False)
        arrays.append(array)
    return arrays[0], arrays[1]


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[..., 3, H, W]`` normalised as ``spec`` says."""
    # Transpose the uint8 pixels (cheap) and work in place: the same float32 operations in the same
    # order as (x * scale - mean) / std, so the result is bit-identical, about 9x faster at 224x224.
    # (transpose, not np.moveaxis: the same view without moveaxis' Python-level axis checks.)
    rank = pixels.ndim
    data = pixels.transpose(*range(rank - 3), rank - 1, rank - 3, rank - 2).astype(np.float32, order="C")
    return _scale_in_place(data, spec)


def _scale_in_place(data: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """float32 ``[..., 3, H, W]`` pixel values 0..255 -> ``(x * scale - mean) / std``, in place."""
    mean, std = _channel_constants(tuple(spec.mean), tuple(spec.std))
    data *= _SCALE
    data -= mean
    data /= std
    return data


def preprocess(source: ImageSource, spec: PreprocessSpec) -> np.ndarray:
    """One image -> float32 ``[3, H, W]`` model input, bit-identical to ``normalize(to_uint8(...))``."""
    img = resize_and_crop(open_image(source), spec)
    width, height = img.size
    data = np.empty((3, height, width), dtype=np.float32)
    # Pillow packs each band on its own (in C), so the pixels arrive channel-first and are cast
    # straight into the tensor: no HxWx3 copy and no strided transpose, about a third of the time
    # normalize(to_uint8(...)) takes at 224x224. open_image always gives RGB: the bands are R, G, B.
    for channel, band in enumerate("RGB"):
        data[channel] = np.frombuffer(img.tobytes("raw", band), dtype=np.uint8).reshape(height, width)
    return _scale_in_place(data, spec)
