"""Labels and preprocessing carried inside ``bestModel.onnx`` itself (ONNX ``metadata_props``).

The trainer writes three string entries into the exported model, so that a bare ``.onnx`` file is
enough to predict::

    modelbuilder.format_version   "1"
    modelbuilder.labels           JSON list of label names in output order
    modelbuilder.preprocessing    JSON of PreprocessSpec.to_dict()

Use :func:`onnx_metadata_props` to build those entries and :func:`read_onnx_metadata` to read them
back. Reading goes through onnxruntime only (the ``onnx`` package is a training-time dependency).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import BundleError
from .preprocess import PreprocessSpec
from .signature import create_session

FORMAT_VERSION_KEY = "modelbuilder.format_version"
LABELS_KEY = "modelbuilder.labels"
PREPROCESSING_KEY = "modelbuilder.preprocessing"

#: Short name -> ONNX metadata_props key written by the trainer and read by the prediction engine.
MODEL_METADATA_KEYS: dict[str, str] = {
    "format_version": FORMAT_VERSION_KEY,
    "labels": LABELS_KEY,
    "preprocessing": PREPROCESSING_KEY,
}


def onnx_metadata_props(
    labels: Sequence[str], preprocessing: PreprocessSpec, *, format_version: int = 1
) -> dict[str, str]:
    """The ``metadata_props`` entries (key -> string value) to embed into an exported ONNX model.

    Example (training side, with the ``onnx`` package)::

        for key, value in onnx_metadata_props(labels, spec).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    """
    return {
        FORMAT_VERSION_KEY: str(int(format_version)),
        LABELS_KEY: json.dumps(list(labels), ensure_ascii=False),
        PREPROCESSING_KEY: json.dumps(preprocessing.to_dict(), sort_keys=True),
    }


def decode_metadata_map(raw: Mapping[str, str], *, source: str = "ONNX model") -> dict[str, Any]:
    """Decode a ``custom_metadata_map``: modelbuilder entries are parsed, others are kept as strings.

    Returns a dict keyed like the input. ``modelbuilder.labels`` becomes a list of str,
    ``modelbuilder.preprocessing`` a dict (PreprocessSpec.to_dict() shape) and
    ``modelbuilder.format_version`` an int.

    Raises:
        BundleError: a modelbuilder entry is present but malformed.
    """
    decoded: dict[str, Any] = dict(raw)
    if FORMAT_VERSION_KEY in raw:
        try:
            decoded[FORMAT_VERSION_KEY] = int(raw[FORMAT_VERSION_KEY])
        except ValueError as exc:
            raise _malformed(source, FORMAT_VERSION_KEY, "an integer", raw[FORMAT_VERSION_KEY]) from exc
    if LABELS_KEY in raw:
        labels = _load_json(source, LABELS_KEY, raw[LABELS_KEY])
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise _malformed(source, LABELS_KEY, "a JSON list of strings", raw[LABELS_KEY])
        decoded[LABELS_KEY] = labels
    if PREPROCESSING_KEY in raw:
        spec = _load_json(source, PREPROCESSING_KEY, raw[PREPROCESSING_KEY])
        try:
            PreprocessSpec.from_dict(spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(
                source, PREPROCESSING_KEY, "a JSON PreprocessSpec", raw[PREPROCESSING_KEY]
            ) from exc
        decoded[PREPROCESSING_KEY] = spec
    return decoded


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and decode the custom metadata of the ONNX model at ``path`` (see decode_metadata_map).

    Raises:
        BundleError: the file does not exist, is not an ONNX model, or carries malformed entries.
    """
    model_path = Path(path)
    if not model_path.is_file():
        raise BundleError(
            f"ONNX model '{model_path}' does not exist or is not a file.",
            hint="Give the path to bestModel.onnx (or to MLModel.zip) from a completed run's outputs.",
        )
    session = create_session(str(model_path), source=f"'{model_path}'")
    return decode_metadata_map(session.get_modelmeta().custom_metadata_map, source=f"'{model_path}'")


def _load_json(source: str, key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _malformed(source, key, "JSON", text) from exc


def _malformed(source: str, key: str, expected: str, given: str) -> BundleError:
    shown = given if len(given) <= 80 else given[:77] + "..."
    return BundleError(
        f"The metadata entry '{key}' of {source} must be {expected}. Got {shown!r} instead.",
        hint="Re-export the model with modelbuilder, or remove the entry and ship "
        "bestModelMap.json next to it.",
    )
