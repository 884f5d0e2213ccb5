"""bestModelMap.json: the label names of a classifier, a JSON array in model output order."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import BundleError, InvalidParameterError
from ..fileio import atomic_write_text

LABEL_MAP_NAME = "bestModelMap.json"
_REBUILD_HINT = (
    "Re-create MLModel.zip from the run's bestModel.onnx and bestModelMap.json, or download it again."
)


def validate_labels(labels: Any) -> list[str]:
    """Return ``labels`` as a list of unique, non-empty strings.

    Raises:
        InvalidParameterError: not a non-empty sequence of unique non-empty strings.
    """
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
        raise InvalidParameterError(
            f"The 'labels' parameter must be a list of label names. Got {type(labels).__name__} instead.",
            hint="Pass the label names in model output order, e.g. ['cat', 'dog'].",
        )
    values = list(labels)
    bad = [value for value in values if not isinstance(value, str) or not value.strip()]
    counts = Counter(value for value in values if isinstance(value, str))
    duplicates = sorted(value for value, count in counts.items() if count > 1)
    if not values or bad or duplicates:
        problem = (
            "is empty" if not values else f"has invalid names {bad!r}" if bad else f"repeats {duplicates!r}"
        )
        raise InvalidParameterError(
            f"The 'labels' parameter must be a non-empty list of unique, non-empty strings. It {problem}.",
            hint="Give one name per model output, in output order.",
        )
    return values


def label_map_bytes(labels: list[str]) -> bytes:
    return (json.dumps(labels, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def write_label_map(path: str | os.PathLike[str], labels: list[str]) -> Path:
    """Write ``bestModelMap.json`` (a JSON array of label names in output order) atomically.

    Raises:
        InvalidParameterError: labels are empty, repeated or not strings.
    """
    values = validate_labels(labels)
    return atomic_write_text(path, label_map_bytes(values).decode("utf-8"))


def read_label_map(path: str | os.PathLike[str]) -> list[str]:
    """Read ``bestModelMap.json``.

    Raises:
        BundleError: the file is missing or not a JSON array of unique label names.
    """
    map_path = Path(path)
    if not map_path.is_file():
        raise BundleError(
            f"Label map '{map_path}' does not exist.",
            hint=f"Put the {LABEL_MAP_NAME} of the run next to the model, or load MLModel.zip instead.",
        )
    return parse_label_map(map_path.read_bytes(), source=f"Label map '{map_path}'")


def parse_label_map(data: bytes, *, source: str) -> list[str]:
    """Parse label-map bytes (see read_label_map).

    Raises:
        BundleError: not UTF-8 JSON, or not an array of unique non-empty strings.
    """
    try:
        labels = json.loads(data.decode("utf-8"))
        return validate_labels(labels if isinstance(labels, list) else None)
    except (UnicodeDecodeError, json.JSONDecodeError, InvalidParameterError) as exc:
        raise BundleError(
            f'{source} must be a JSON array of unique label names, e.g. ["cat", "dog"]: {exc}',
            hint=_REBUILD_HINT,
        ) from exc
