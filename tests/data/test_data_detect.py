"""Recognising images by their first bytes."""

from __future__ import annotations

import pytest

from factories import make_image, save_image_bytes
from modelbuilder.data import is_hidden, sniff_image_format
from modelbuilder.data.detect import describe_non_image


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        pytest.param("PNG", "PNG", id="png"),
        pytest.param("JPEG", "JPEG", id="jpeg"),
        pytest.param("GIF", "GIF", id="gif"),
        pytest.param("BMP", "BMP", id="bmp"),
        pytest.param("TIFF", "TIFF", id="tiff"),
        pytest.param("WEBP", "WEBP", id="webp"),
        pytest.param("ICO", "ICO", id="ico"),
        pytest.param("PPM", "PPM", id="ppm"),
    ],
)
def test_sniffs_what_pillow_writes(fmt: str, expected: str) -> None:
    assert sniff_image_format(save_image_bytes(make_image(0, 0, 16), fmt)[:32]) == expected


@pytest.mark.parametrize(
    ("head", "description"),
    [
        pytest.param(b"", "the file is empty", id="empty"),
        pytest.param(b"hello, world\n", "it contains text", id="text"),
        pytest.param("é".encode() * 20, "it contains text", id="utf8-cut-in-a-character"),
        pytest.param(b"%PDF-1.7\n", "it is a PDF document", id="pdf"),
        pytest.param(b"PK\x03\x04\x14\x00", "it is a zip archive", id="zip"),
        pytest.param(b"  <!DOCTYPE html><html>", "it is an HTML page", id="html"),
        pytest.param(b"\x00\x01\x02\x03\xfe\xff", "no known image signature", id="binary"),
        pytest.param(b"BM this is text, not a bitmap", "it contains text", id="text-starting-with-BM"),
        pytest.param(b"P1 is a paragraph", "", id="text-starting-with-P1-looks-like-pbm"),
    ],
)
def test_non_images(head: bytes, description: str) -> None:
    if description:
        assert sniff_image_format(head) is None
        assert description in describe_non_image(head)
    else:  # a PBM signature: accepted by the sniffer; the full decode then rejects it as corrupt
        assert sniff_image_format(head) == "PPM"


@pytest.mark.parametrize(
    ("name", "hidden"),
    [
        (".ipynb_checkpoints", True),
        (".DS_Store", True),
        ("__MACOSX", True),
        ("Thumbs.db", True),
        ("._cat.jpg", True),
        ("cat", False),
        ("cat.jpg", False),
        ("_private", False),
    ],
)
def test_is_hidden(name: str, hidden: bool) -> None:
    assert is_hidden(name) is hidden
