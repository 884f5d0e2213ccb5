"""A run's results as the portal shows them: its files, its evaluation, thumbnails, and uploaded images.

Thumbnails are only made of images that the run's ``evaluation.json`` lists (its ``validation_items`` and
``most_confidently_wrong``): the path in the request must be one of those strings exactly, so the endpoint
can never be used to read another file. Uploaded images pass the checks that training data passes: the
content must start with a known image signature, and it must decode through ``open_image`` with the
decompression-bomb guard.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.detect import HEAD_BYTES, describe_non_image, sniff_image_format
from ..errors import ImageError
from ..pipeline.preprocess import ImageDecodeError, open_image
from ..services.artifacts import RunFile
from .errors import PortalHTTPError
from .schemas import (
    ArtifactOut,
    ConfusionMatrixOut,
    EvaluationItemOut,
    EvaluationOut,
    PerClassOut,
)
from .views import api_run_url, artifact_url, thumbnail_url

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_THUMBNAIL_SIZE = 160

#: Downloadable outputs in the order the run page lists them: (match, kind, title).
_KNOWN_FILES: tuple[tuple[str, str, str], ...] = (
    ("MLModel.zip", "bundle", "Prediction pipeline (MLModel.zip)"),
    ("bestModel.onnx", "model", "ONNX model"),
    ("bestModelMap.json", "label_map", "Label map"),
    ("*.Model.zip", "code", "Generated model package (Python)"),
    ("*.ConsoleApp.zip", "code", "Generated console app (Python)"),
    ("*.WebApi.zip", "code", "Generated Web API (FastAPI)"),
    ("evaluation.json", "evaluation", "Evaluation (JSON)"),
    ("logs/run.log", "log", "Training log"),
)


def _classify(path: str) -> tuple[int, str, str]:
    for order, (pattern, kind, title) in enumerate(_KNOWN_FILES):
        if pattern.startswith("*") and "/" not in path and path.endswith(pattern[1:]):
            return order, kind, f"{title}: {path}"
        if path == pattern:
            return order, kind, title
    return len(_KNOWN_FILES), "file", path


def list_run_files(workspace: str, run_id: str, files: Iterable[RunFile]) -> list[ArtifactOut]:
    """The run's files (``services.artifacts.list_run_files``) as the run page lists them: known outputs
    first, each with its kind, title and download URL."""
    found = []
    for file in files:
        order, kind, title = _classify(file.path)
        found.append(
            (
                order,
                file.path,
                ArtifactOut(
                    path=file.path,
                    size=file.size,
                    sha256=file.sha256,
                    kind=kind,
                    title=title,
                    url=artifact_url(workspace, run_id, file.path),
                ),
            )
        )
    return [item for _, _, item in sorted(found, key=lambda entry: (entry[0], entry[1]))]


# --- evaluation -----------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _entries(evaluation: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = evaluation.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def listed_paths(evaluation: dict[str, Any]) -> set[str]:
    """Every image path the evaluation lists: the only paths the thumbnail endpoint serves."""
    return {
        item["path"]
        for key in ("validation_items", "most_confidently_wrong")
        for item in _entries(evaluation, key)
        if isinstance(item.get("path"), str) and item["path"]
    }


def item_out(workspace: str, run_id: str, item: dict[str, Any], size: int) -> EvaluationItemOut:
    path = item.get("path") if isinstance(item.get("path"), str) else None
    return EvaluationItemOut(
        path=path,
        true_label=str(item.get("true_label", "")),
        predicted_label=str(item.get("predicted_label", "")),
        score=_number(item.get("score")),
        thumbnail_url=None if not path else thumbnail_url(workspace, run_id, path, size),
    )


def evaluation_out(workspace: str, run_id: str, evaluation: dict[str, Any]) -> EvaluationOut:
    per_class = [
        PerClassOut(
            label=str(row.get("label", "")),
            precision=_number(row.get("precision")) or 0.0,
            recall=_number(row.get("recall")) or 0.0,
            f1=_number(row.get("f1")) or 0.0,
            support=int(row.get("support") or 0),
        )
        for row in _entries(evaluation, "per_class")
    ]
    matrix = evaluation.get("confusion_matrix")
    confusion = None
    if isinstance(matrix, dict) and isinstance(matrix.get("labels"), list):
        confusion = ConfusionMatrixOut(
            labels=[str(label) for label in matrix["labels"]],
            matrix=[[int(v) for v in row] for row in matrix.get("matrix", [])],
        )
    samples = evaluation.get("num_samples")
    return EvaluationOut(
        accuracy=_number(evaluation.get("accuracy")),
        macro_accuracy=_number(evaluation.get("macro_accuracy")),
        log_loss=_number(evaluation.get("log_loss")),
        num_samples=samples if isinstance(samples, int) else None,
        per_class=per_class,
        confusion_matrix=confusion,
        most_confidently_wrong=[
            item_out(workspace, run_id, item, DEFAULT_THUMBNAIL_SIZE)
            for item in _entries(evaluation, "most_confidently_wrong")
        ],
        validation_item_count=len(_entries(evaluation, "validation_items")),
        items_url=f"{api_run_url(workspace, run_id)}/evaluation/items",
    )


def matching_items(
    evaluation: dict[str, Any], true_label: str | None, predicted_label: str | None
) -> list[dict[str, Any]]:
    """The validation items of one confusion-matrix cell (or row, or column), most confident first."""
    items = [
        item
        for item in _entries(evaluation, "validation_items")
        if (true_label is None or str(item.get("true_label")) == true_label)
        and (predicted_label is None or str(item.get("predicted_label")) == predicted_label)
    ]
    return sorted(items, key=lambda item: -(_number(item.get("score")) or 0.0))


# --- images ---------------------------------------------------------------------------------------


def locate_listed_image(path: str, params: dict[str, Any]) -> Path | None:
    """Where an image that the evaluation lists is now: its absolute path, or relative to the run's data
    (``data`` / ``validation_data`` params: a folder, or the folder of a CSV)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for key in ("validation_data", "data"):
        root = params.get(key)
        if not isinstance(root, str) or not root:
            continue
        base = Path(root).expanduser()
        base = base if base.is_dir() else base.parent
        if (base / candidate).is_file():
            return base / candidate
    return None


def make_thumbnail(path: Path, size: int) -> bytes:
    """A JPEG thumbnail (at most ``size`` x ``size``) of an image file, decoded with the bomb guard.

    Raises:
        ImageError: the file is not a readable, safe image.
    """
    try:
        image = open_image(path)
    except ImageDecodeError as exc:
        raise ImageError(str(exc), hint="The image changed since the run evaluated it.") from exc
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def check_upload(data: bytes, limit: int = MAX_UPLOAD_BYTES) -> tuple[Image.Image, str]:
    """Decode an uploaded image as training data is checked: size, image signature, safe decoding.

    Returns:
        The RGB image and its format (PNG, JPEG, ...).

    Raises:
        PortalHTTPError: 413 when larger than ``limit``, 415 when the content is not an image.
        ImageError: the image cannot be decoded, or is a decompression bomb.
    """
    if not data:
        raise ImageError(
            "The uploaded file is empty.", hint="Choose an image file (JPEG, PNG, BMP, GIF, TIFF, WebP)."
        )
    if len(data) > limit:
        raise PortalHTTPError(
            413,
            f"The uploaded image has {len(data) / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB.",
            hint="Resize or re-compress the image and try again.",
        )
    fmt = sniff_image_format(data[:HEAD_BYTES])
    if fmt is None:
        raise PortalHTTPError(
            415,
            f"The uploaded file is not an image: {describe_non_image(data[:HEAD_BYTES])}.",
            hint="Upload a JPEG, PNG, BMP, GIF, TIFF or WebP image; files are recognised by their content.",
        )
    try:
        image = open_image(data)
    except ImageDecodeError as exc:
        raise ImageError(
            f"The uploaded {fmt} image cannot be used: {exc}",
            hint="Upload an image that opens in an image viewer and has at most 89 megapixels.",
        ) from exc
    return image, fmt
