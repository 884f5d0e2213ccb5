"""Shared pieces of the new-run (wizard) tests: an app with data roots and small upload limits, zips."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

from fastapi import FastAPI
from portal_fixtures import WORKSPACE

from factories import make_image, save_image_bytes
from modelbuilder.portal import create_app
from modelbuilder.services.datasets import UploadLimits

API = f"/api/workspaces/{WORKSPACE}"
SMALL_LIMITS = UploadLimits(
    max_upload_bytes=2 * 1024 * 1024,
    max_files=50,
    max_total_bytes=8 * 1024 * 1024,
    max_file_bytes=6 * 1024 * 1024,
    max_ratio=100.0,
)


def wizard_app(roots: Iterable[Path] = (), limits: UploadLimits = SMALL_LIMITS) -> FastAPI:
    return create_app(WORKSPACE, host="127.0.0.1", port=8765, data_roots=list(roots), upload_limits=limits)


def image_files(classes: int = 2, per_class: int = 3, size: int = 24) -> dict[str, bytes]:
    """``label<c>/label<c>_<i>.png`` -> PNG bytes."""
    return {
        f"label{c}/label{c}_{i}.png": save_image_bytes(make_image(c, i, size), "PNG")
        for c in range(classes)
        for i in range(per_class)
    }


def zip_bytes(files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED,
              reverse: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name in sorted(files, reverse=reverse):
            archive.writestr(name, files[name])
    return buffer.getvalue()


def symlink_zip(name: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, target)
        archive.writestr("label1/a.png", save_image_bytes(make_image(1, 0, 16), "PNG"))
    return buffer.getvalue()
