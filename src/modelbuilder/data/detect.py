"""Recognise images by their content (magic bytes), and names the scan must never treat as labels.

A file's extension says nothing reliable: a ``.txt`` holding PNG bytes is an image, and a ``.jpg``
holding HTML is not. ``sniff_image_format`` looks at the first bytes only, so the scan can report
non-images without trying to decode them.
"""

from __future__ import annotations

import struct

# How many leading bytes ``sniff_image_format`` needs.
HEAD_BYTES = 32

# Names that tools leave behind; they are never labels or images.
HIDDEN_NAMES = frozenset({"__MACOSX", "Thumbs.db", "thumbs.db", "desktop.ini", "Desktop.ini", "$RECYCLE.BIN"})

# Extensions of files that are plainly not meant to be images (READMEs, label lists, notebooks).
# Such a file is still reported as skipped, but it does not count as a *bad image* for
# ``on_bad_image="fail"``: a README next to the photos should not stop a run.
DOCUMENT_SUFFIXES = frozenset(
    {
        ".txt",
        ".md",
        ".rst",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".xml",
        ".yaml",
        ".yml",
        ".ini",
        ".cfg",
        ".toml",
        ".log",
        ".html",
        ".htm",
        ".pdf",
        ".py",
        ".ipynb",
        ".db",
        ".sqlite",
        ".zip",
        ".tar",
        ".gz",
        ".doc",
        ".docx",
        ".xls",
        ".xlsx",
        ".license",
    }
)

_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_ISO_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIF", b"heix": "HEIF", b"mif1": "HEIF"}


def is_hidden(name: str) -> bool:
    """True for dot-files and folders (``.ipynb_checkpoints``, ``.DS_Store``) and OS litter."""
    return name.startswith(".") or name in HIDDEN_NAMES


def sniff_image_format(head: bytes) -> str | None:
    """The image format that ``head`` (a file's first bytes) starts with, or None.

    Recognises PNG, JPEG, GIF, BMP, TIFF, WebP, ICO, JPEG 2000, PNM, QOI, PSD, AVIF and HEIF.
    Formats without a signature (TGA) are not recognised.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in _BMP_HEADER_SIZES:
        return "BMP"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xffO\xffQ"):
        return "JPEG2000"
    if head[:4] == b"\x00\x00\x01\x00" and len(head) >= 6 and head[4:6] != b"\x00\x00":
        return "ICO"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return "PPM"
    if head[:4] == b"qoif":
        return "QOI"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[4:8] == b"ftyp" and head[8:12] in _ISO_BRANDS:
        return _ISO_BRANDS[head[8:12]]
    return None


def describe_non_image(head: bytes) -> str:
    """A few words on what a file that is not an image seems to be (for the issue message)."""
    if not head:
        return "the file is empty"
    if head.startswith(b"%PDF"):
        return "it is a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page (a failed download?)"
    if head.startswith(b"\x00\x00\x00") and head[4:8] == b"ftyp":
        return "it is a video or an unsupported ISO media file"
    sample = head[:HEAD_BYTES]
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample.
        try:
            sample[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "its content has no known image signature"
    if b"\x00" in sample:
        return "its content has no known image signature"
    return "it contains text"
