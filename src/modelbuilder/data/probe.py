"""Check one file: read it once, hash it, recognise it, decode it fully, note what decoding changed.

``probe_file`` runs in the scanning process or in a worker process (``probe_files`` takes a chunk),
so it returns a small picklable ``Probe`` and never raises for a bad file.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from ..pipeline.preprocess import ImageDecodeError, open_image
from .detect import HEAD_BYTES, describe_non_image, sniff_image_format

# Problem kinds: the file is skipped (or fails the scan with on_bad_image="fail").
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
DECOMPRESSION_BOMB = "decompression_bomb"
UNSUPPORTED_FORMAT = "unsupported_format"
UNREADABLE = "unreadable"
MISSING_FILE = "missing_file"

# Informational kinds: the image is used, changed on the way in.
EXIF_ROTATION = "exif_rotation"
COLOR_MODE = "color_mode"

_ORIENTATION_TAG = 0x0112
_ORIENTATIONS = {
    2: "mirrored left to right",
    3: "turned 180°",
    4: "mirrored top to bottom",
    5: "mirrored and turned 90° anticlockwise",
    6: "turned 90° clockwise",
    7: "mirrored and turned 90° clockwise",
    8: "turned 90° anticlockwise",
}
_MODE_NAMES = {
    "1": "1-bit black and white (1)",
    "L": "8-bit greyscale (L)",
    "LA": "greyscale with alpha (LA); transparent areas became white",
    "La": "greyscale with alpha (La); transparent areas became white",
    "P": "palette colours (P)",
    "PA": "palette with alpha (PA); transparent areas became white",
    "RGBA": "RGBA; transparent areas became white",
    "RGBa": "RGBA; transparent areas became white",
    "RGBX": "RGBX",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "LAB",
    "HSV": "HSV",
    "I": "32-bit integer greyscale (I); scaled to 8 bits",
    "I;16": "16-bit greyscale (I;16); scaled to 8 bits",
    "I;16B": "16-bit greyscale (I;16B); scaled to 8 bits",
    "I;16L": "16-bit greyscale (I;16L); scaled to 8 bits",
    "I;16N": "16-bit greyscale (I;16N); scaled to 8 bits",
    "F": "32-bit float greyscale (F); scaled to 8 bits",
}
_PALETTE_TRANSPARENT = "palette with transparency (P); transparent areas became white"

# One shared message string per mode keeps 60,000 "converted from L" notes cheap.
_CONVERSION_MESSAGES: dict[str, str] = {}


class Note(NamedTuple):
    """An informational finding about an image that is used."""

    kind: str
    action: str
    message: str


class Probe(NamedTuple):
    """What ``probe_file`` found. ``problem`` is None for a usable image."""

    path: str
    sha256: str
    width: int
    height: int
    mode: str
    format: str
    problem: str | None
    message: str
    notes: tuple[Note, ...]


def _failed(path: str, digest: str, kind: str, message: str) -> Probe:
    return Probe(path, digest, 0, 0, "", "", kind, message, ())


def _conversion_message(mode: str, transparent: bool) -> str:
    key = f"{mode}+t" if transparent else mode
    message = _CONVERSION_MESSAGES.get(key)
    if message is None:
        described = _PALETTE_TRANSPARENT if transparent else _MODE_NAMES.get(mode, f"mode {mode}")
        message = f"converted to RGB from {described}"
        _CONVERSION_MESSAGES[key] = message
    return message


def _orientation(img: Image.Image) -> int:
    # A PNG's getexif() decodes the whole image when the header had no eXIf chunk; skip that.
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    value = img.getexif().get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) else 1


def _decode_problem(error: ImageDecodeError, sniffed: str) -> tuple[str, str]:
    cause = error.__cause__
    if isinstance(cause, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DECOMPRESSION_BOMB, f"is too large to decode safely: {cause}"
    if isinstance(cause, UnidentifiedImageError):
        return UNSUPPORTED_FORMAT, (
            f"looks like a {sniffed} image, but this installation of Pillow cannot read {sniffed}"
        )
    reason = str(cause) if cause is not None else str(error)
    return CORRUPT, f"looks like a {sniffed} image but cannot be decoded (corrupt or truncated): {reason}"


def probe_file(path: str) -> Probe:
    """Read, hash, recognise and fully decode ``path``; never raises for a bad file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return _failed(path, "", MISSING_FILE, "does not exist")
    except OSError as exc:
        return _failed(path, "", UNREADABLE, f"cannot be read: {exc.strerror or exc}")
    digest = hashlib.sha256(data).hexdigest()
    head = data[:HEAD_BYTES]
    sniffed = sniff_image_format(head)
    if sniffed is None:
        return _failed(path, digest, NOT_AN_IMAGE, f"is not an image: {describe_non_image(head)}")
    with warnings.catch_warnings():
        # Pillow's advice-style UserWarnings (palette transparency, odd EXIF) are not problems;
        # open_image itself turns the decompression-bomb warning into an error.
        warnings.simplefilter("ignore", UserWarning)
        try:
            rgb = open_image(data)
        except ImageDecodeError as exc:
            kind, message = _decode_problem(exc, sniffed)
            return _failed(path, digest, kind, message)
        except Exception as exc:  # a Pillow plugin bug must not stop a 60,000-file scan
            return _failed(path, digest, CORRUPT, f"cannot be decoded: {type(exc).__name__}: {exc}")
        width, height = rgb.size
        try:
            with Image.open(io.BytesIO(data)) as img:
                mode, fmt = img.mode, img.format or sniffed
                transparent = mode == "P" and "transparency" in img.info
                orientation = _orientation(img)
        except Exception:  # decoding worked a moment ago; the notes are only informational
            mode, fmt, transparent, orientation = "RGB", sniffed, False, 1
    notes: list[Note] = []
    if orientation in _ORIENTATIONS:
        notes.append(
            Note(
                EXIF_ROTATION,
                "rotated",
                f"has EXIF orientation {orientation}: {_ORIENTATIONS[orientation]} to stand upright, "
                f"now {width}x{height}",
            )
        )
    if mode != "RGB":
        notes.append(Note(COLOR_MODE, "converted", _conversion_message(mode, transparent)))
    return Probe(path, digest, width, height, mode, fmt, None, "", tuple(notes))


def probe_files(paths: list[str]) -> list[Probe]:
    """``probe_file`` over a chunk (one task of the worker pool)."""
    return [probe_file(path) for path in paths]
