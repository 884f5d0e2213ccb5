"""MLModel.zip: the shippable prediction pipeline (format version 1).

Members::

    manifest.json       format_version, labels, preprocessing, input/output schema, sha256 + size per member
    bestModel.onnx      the classifier (input1 float32 [N,3,H,W] -> output1 float32 logits [N,C])
    bestModelMap.json   JSON array of label names in output order

Reading is defensive: members are read into memory (never extracted to paths taken from the zip),
member names with ``..``, absolute paths or backslashes are refused, and every member's size and
sha256 must match the manifest. Anything wrong raises :class:`~modelbuilder.errors.BundleError`
with a hint.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import BundleError, InvalidParameterError
from ..fileio import atomic_open, sha256_bytes
from .label_map import LABEL_MAP_NAME, label_map_bytes, parse_label_map, validate_labels
from .preprocess import PreprocessSpec
from .signature import check_signature, inspect_onnx, schema_from_signature

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "bestModel.onnx"

MAX_MANIFEST_BYTES = 16 << 20
MAX_MEMBER_BYTES = 4 << 30
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REBUILD_HINT = (
    "Re-create MLModel.zip from the run's bestModel.onnx and bestModelMap.json, or download it again."
)


@dataclass(frozen=True)
class Bundle:
    """A verified MLModel.zip held in memory (everything but the ONNX signature is checked)."""

    path: Path
    manifest: dict[str, Any]
    model_bytes: bytes
    label_map_bytes: bytes

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def preprocessing(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.manifest["preprocessing"])


def modelbuilder_version() -> str:
    """The installed modelbuilder version ("unknown" when running from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelbuilder")
    except PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------- writing
def write_bundle(
    path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    labels: list[str],
    preprocess: PreprocessSpec,
    *,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write MLModel.zip atomically and return its path.

    The ONNX model is loaded once to record (and check) its input and output schema.

    Raises:
        InvalidParameterError: bad labels, or metadata that is not JSON-serialisable.
        BundleError: the ONNX file is missing, unloadable, or disagrees with labels / preprocessing.
    """
    values = validate_labels(labels)
    model_file = Path(onnx_path)
    if not model_file.is_file():
        raise BundleError(
            f"ONNX model '{model_file}' does not exist.",
            hint="Export the model first; MLModel.zip is written from an existing bestModel.onnx.",
        )
    try:
        metadata_json = json.loads(json.dumps(metadata or {}))
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"The 'metadata' parameter of write_bundle must be JSON-serialisable: {exc}",
            hint="Pass only str, int, float, bool, None, lists and dicts with string keys.",
        ) from exc
    model_bytes = model_file.read_bytes()
    signature = inspect_onnx(model_bytes, source=f"ONNX model '{model_file}'")
    model_input, model_output = schema_from_signature(signature, preprocess.crop_size, len(values))
    map_bytes = label_map_bytes(values)
    created = datetime.now(timezone.utc).replace(microsecond=0)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": f"modelbuilder {modelbuilder_version()}",
        "created_at": created.isoformat(),
        "model": MODEL_NAME,
        "label_map": LABEL_MAP_NAME,
        "labels": values,
        "preprocessing": preprocess.to_dict(),
        "input": model_input,
        "output": model_output,
        "members": {
            MODEL_NAME: {"sha256": sha256_bytes(model_bytes), "size": len(model_bytes)},
            LABEL_MAP_NAME: {"sha256": sha256_bytes(map_bytes), "size": len(map_bytes)},
        },
        "metadata": metadata_json,
    }
    manifest_bytes = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    stamp = created.timetuple()[:6]
    target = Path(path)
    with atomic_open(target, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
        # The manifest goes first so that streaming readers see it before the model.
        for name, data, compression in (
            (MANIFEST_NAME, manifest_bytes, zipfile.ZIP_DEFLATED),
            (MODEL_NAME, model_bytes, zipfile.ZIP_STORED),  # float weights barely compress; load faster
            (LABEL_MAP_NAME, map_bytes, zipfile.ZIP_DEFLATED),
        ):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return target


# ------------------------------------------------------------------------------------------- reading
def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``manifest.json`` of an MLModel.zip (members are not hashed).

    Raises:
        BundleError: not a zip, unsafe member names, no manifest, bad JSON, or a newer format_version.
    """
    bundle_path = Path(path)
    with _open_zip(bundle_path) as archive:
        return _read_manifest(archive, _source(bundle_path))


def read_bundle(path: str | os.PathLike[str], *, check_model: bool = False) -> Bundle:
    """Read an MLModel.zip into memory and check it.

    Checks: a safe zip, the manifest schema and format_version, the presence, size and sha256 of
    every member listed, and labels == label map. With ``check_model`` the ONNX model is also
    loaded and its input/output names, types and shapes are compared with the manifest.

    Raises:
        BundleError: any check fails.
    """
    bundle_path = Path(path)
    source = _source(bundle_path)
    with _open_zip(bundle_path) as archive:
        manifest = _read_manifest(archive, source)
        members = {
            name: _read_member(archive, name, entry, source) for name, entry in manifest["members"].items()
        }
    label_map = parse_label_map(members[manifest["label_map"]], source=f"{manifest['label_map']} in {source}")
    if label_map != manifest["labels"]:
        raise BundleError(
            f"The labels in the manifest of {source} ({manifest['labels']}) differ from "
            f"{manifest['label_map']} ({label_map}).",
            hint=_REBUILD_HINT,
        )
    bundle = Bundle(bundle_path, manifest, members[manifest["model"]], members[manifest["label_map"]])
    if check_model:
        model_source = f"{manifest['model']} in {source}"
        check_signature(inspect_onnx(bundle.model_bytes, source=model_source), manifest, source=model_source)
    return bundle


def verify_bundle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Fully verify an MLModel.zip and return its manifest.

    In addition to read_bundle's checks, the ONNX model is loaded and its input/output names,
    types and shapes are compared with the manifest.

    Raises:
        BundleError: any check fails.
    """
    return read_bundle(path, check_model=True).manifest


def _source(path: Path) -> str:
    return f"MLModel.zip '{path}'"


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise BundleError(
            f"MLModel.zip '{path}' does not exist or is not a file.",
            hint="Give the path to the MLModel.zip of a completed run (in its outputs folder), "
            "or to bestModel.onnx.",
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(
            f"{_source(path)} is not a zip archive ({exc}).",
            hint="The file is damaged or is not an MLModel.zip. " + _REBUILD_HINT,
        ) from exc
    try:
        _check_member_names(archive, path)
    except BaseException:
        archive.close()
        raise
    return archive


def _check_member_names(archive: zipfile.ZipFile, path: Path) -> None:
    seen: set[str] = set()
    for info in archive.infolist():
        name = info.filename
        if not _is_safe_member_name(name):
            raise BundleError(
                f"{_source(path)} contains an unsafe member name {name!r} (absolute, with '..' or '\\').",
                hint="Do not use this file: it was not written by modelbuilder. " + _REBUILD_HINT,
            )
        if name in seen:
            raise BundleError(
                f"{_source(path)} contains the member {name!r} twice.",
                hint="Do not use this file: it was modified after it was written. " + _REBUILD_HINT,
            )
        seen.add(name)


def _is_safe_member_name(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        return False
    if any(ord(char) < 32 for char in name):
        return False
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def _read_manifest(archive: zipfile.ZipFile, source: str) -> dict[str, Any]:
    try:
        info = archive.getinfo(MANIFEST_NAME)
    except KeyError:
        raise BundleError(f"{source} has no {MANIFEST_NAME}.", hint=_REBUILD_HINT) from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{MANIFEST_NAME} in {source} is {info.file_size} bytes; "
            f"at most {MAX_MANIFEST_BYTES} are allowed.",
            hint=_REBUILD_HINT,
        )
    try:
        manifest = json.loads(archive.read(MANIFEST_NAME).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{MANIFEST_NAME} in {source} is not valid JSON: {exc}", hint=_REBUILD_HINT
        ) from exc
    if not isinstance(manifest, dict):
        raise BundleError(
            f"{MANIFEST_NAME} in {source} must be a JSON object. Got {type(manifest).__name__} instead.",
            hint=_REBUILD_HINT,
        )
    _check_manifest(manifest, source)
    return manifest


def _check_manifest(manifest: dict[str, Any], source: str) -> None:
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(
            f"The manifest of {source} must have an integer format_version >= 1. Got {version!r} instead.",
            hint=_REBUILD_HINT,
        )
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{source} has format version {version}; this modelbuilder ({modelbuilder_version()}) "
            f"reads format version {FORMAT_VERSION} and older.",
            hint='upgrade modelbuilder: pip install --upgrade "modelbuilder"',
        )
    for key, kind in (
        ("labels", list),
        ("preprocessing", dict),
        ("input", dict),
        ("output", dict),
        ("members", dict),
        ("model", str),
        ("label_map", str),
    ):
        if not isinstance(manifest.get(key), kind):
            raise BundleError(
                f"The manifest of {source} must have '{key}' as a JSON {kind.__name__}. "
                f"Got {type(manifest.get(key)).__name__} instead.",
                hint=_REBUILD_HINT,
            )
    try:
        validate_labels(manifest["labels"])
        PreprocessSpec.from_dict(manifest["preprocessing"])
    except (InvalidParameterError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"The manifest of {source} is invalid: {exc}", hint=_REBUILD_HINT) from exc
    for role in ("input", "output"):
        entry = manifest[role]
        if not isinstance(entry.get("name"), str) or not isinstance(entry.get("shape"), list):
            raise BundleError(
                f"The manifest of {source} must give the model {role}'s 'name' (string) and 'shape' (list).",
                hint=_REBUILD_HINT,
            )
    members = manifest["members"]
    for name in (manifest["model"], manifest["label_map"]):
        if name not in members:
            raise BundleError(
                f"The manifest of {source} does not list its member {name!r}.", hint=_REBUILD_HINT
            )
    for name, entry in members.items():
        valid = (
            _is_safe_member_name(name)
            and name != MANIFEST_NAME
            and isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and bool(_SHA256.match(entry["sha256"]))
            and isinstance(entry.get("size"), int)
            and 0 <= entry["size"] <= MAX_MEMBER_BYTES
        )
        if not valid:
            raise BundleError(
                f"The manifest of {source} has an invalid entry for member {name!r}: {entry!r} "
                "(expected a safe name with a lower-case hex sha256 and a size in bytes).",
                hint=_REBUILD_HINT,
            )


def _read_member(archive: zipfile.ZipFile, name: str, entry: dict[str, Any], source: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise BundleError(f"{source} is missing its member {name!r}.", hint=_REBUILD_HINT) from None
    if info.file_size != entry["size"]:
        raise BundleError(
            f"Member {name!r} of {source} is {info.file_size} bytes; the manifest says {entry['size']}.",
            hint="The file was modified after it was written. " + _REBUILD_HINT,
        )
    try:
        with archive.open(info) as handle:
            data = handle.read(entry["size"] + 1)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleError(f"Member {name!r} of {source} cannot be read: {exc}", hint=_REBUILD_HINT) from exc
    if len(data) != entry["size"] or sha256_bytes(data) != entry["sha256"]:
        raise BundleError(
            f"Member {name!r} of {source} does not match the sha256 recorded in its manifest.",
            hint="The file was modified or damaged after it was written. " + _REBUILD_HINT,
        )
    return data
