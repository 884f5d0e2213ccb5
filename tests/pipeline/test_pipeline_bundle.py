"""MLModel.zip: writing, reading, verification and tamper resistance."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from onnx_factory import LABELS, SPEC, make_classifier

from modelbuilder.errors import BundleError, InvalidParameterError
from modelbuilder.fileio import sha256_bytes, sha256_file
from modelbuilder.pipeline import (
    FORMAT_VERSION,
    read_bundle,
    read_label_map,
    read_manifest,
    verify_bundle,
    write_bundle,
    write_label_map,
)

OK = {"sha256": "0" * 64, "size": 1}


def rewrite_zip(
    src: Path,
    dst: Path,
    *,
    replace: dict[str, bytes] | None = None,
    add: dict[str, bytes] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            if info.filename not in drop:
                new.writestr(info.filename, replace.get(info.filename, old.read(info.filename)))
        for name, data in add.items():
            new.writestr(zipfile.ZipInfo(name), data)
    return dst


def edit_manifest(src: Path, dst: Path, **changes: object) -> Path:
    with zipfile.ZipFile(src) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    manifest.update(changes)
    return rewrite_zip(src, dst, replace={"manifest.json": json.dumps(manifest).encode()})


def test_written_bundle_has_the_documented_manifest(model_dir: Path) -> None:
    bundle = model_dir / "MLModel.zip"
    with zipfile.ZipFile(bundle) as archive:
        assert archive.namelist() == ["manifest.json", "bestModel.onnx", "bestModelMap.json"]
        assert archive.read("bestModel.onnx") == (model_dir / "bestModel.onnx").read_bytes()
        assert json.loads(archive.read("bestModelMap.json")) == LABELS
    manifest = read_manifest(bundle)
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["created_by"].startswith("modelbuilder ")
    assert manifest["model"] == "bestModel.onnx" and manifest["label_map"] == "bestModelMap.json"
    assert manifest["labels"] == LABELS
    assert manifest["preprocessing"] == SPEC.to_dict()
    assert manifest["input"] == {"name": "input1", "dtype": "float32", "shape": ["N", 3, 32, 32]}
    assert manifest["output"] == {"name": "output1", "dtype": "float32", "shape": ["N", 3], "kind": "logits"}
    assert manifest["members"]["bestModel.onnx"] == {
        "sha256": sha256_file(model_dir / "bestModel.onnx"),
        "size": (model_dir / "bestModel.onnx").stat().st_size,
    }
    assert manifest["metadata"] == {"backbone": "tiny", "accuracy": 1.0}
    assert verify_bundle(bundle) == manifest


def test_read_bundle_returns_members_in_memory(bundle_path: Path) -> None:
    bundle = read_bundle(bundle_path)
    assert bundle.labels == LABELS
    assert bundle.preprocessing == SPEC
    assert sha256_bytes(bundle.model_bytes) == bundle.manifest["members"]["bestModel.onnx"]["sha256"]
    assert json.loads(bundle.label_map_bytes) == LABELS


def test_write_bundle_rejects_labels_that_do_not_match_the_model(tmp_path: Path) -> None:
    onnx_path = make_classifier(tmp_path / "m.onnx", num_classes=4)
    with pytest.raises(BundleError, match=r"shape \[N, 3\]. Got \[N, 4\]") as info:
        write_bundle(tmp_path / "MLModel.zip", onnx_path, LABELS, SPEC)
    assert info.value.hint
    assert not (tmp_path / "MLModel.zip").exists()


def test_write_bundle_rejects_a_crop_size_the_model_cannot_take(tmp_path: Path) -> None:
    onnx_path = make_classifier(tmp_path / "m.onnx", size=32)
    with pytest.raises(BundleError, match="input1"):
        write_bundle(tmp_path / "MLModel.zip", onnx_path, LABELS, SPEC.with_size(64))


def test_write_bundle_accepts_a_model_with_dynamic_image_size(tmp_path: Path) -> None:
    onnx_path = make_classifier(tmp_path / "m.onnx", size=None)
    manifest = verify_bundle(write_bundle(tmp_path / "MLModel.zip", onnx_path, LABELS, SPEC.with_size(48)))
    assert manifest["input"]["shape"] == ["N", 3, 48, 48]


@pytest.mark.parametrize(
    ("labels", "match"),
    [([], "is empty"), (["a", "a"], "repeats"), (["a", ""], "invalid names"), ("ab", "list of label names")],
)
def test_write_bundle_validates_labels(tmp_path: Path, model_dir: Path, labels: object, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        write_bundle(tmp_path / "MLModel.zip", model_dir / "bestModel.onnx", labels, SPEC)  # type: ignore[arg-type]


def test_write_bundle_errors_name_missing_model_and_bad_metadata(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(BundleError, match="missing.onnx' does not exist"):
        write_bundle(tmp_path / "MLModel.zip", tmp_path / "missing.onnx", LABELS, SPEC)
    with pytest.raises(InvalidParameterError, match="JSON-serialisable"):
        write_bundle(tmp_path / "z.zip", model_dir / "bestModel.onnx", LABELS, SPEC, metadata={"x": object()})
    not_onnx = tmp_path / "bad.onnx"
    not_onnx.write_bytes(b"not a model")
    with pytest.raises(BundleError, match="not a loadable ONNX model"):
        write_bundle(tmp_path / "MLModel.zip", not_onnx, LABELS, SPEC)


def test_changed_member_fails_the_sha256_check(bundle_path: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle_path) as archive:
        model = bytearray(archive.read("bestModel.onnx"))
    model[-1] ^= 0xFF
    tampered = rewrite_zip(bundle_path, tmp_path / "t.zip", replace={"bestModel.onnx": bytes(model)})
    with pytest.raises(BundleError, match="does not match the sha256") as info:
        verify_bundle(tampered)
    assert "Re-create MLModel.zip" in (info.value.hint or "")


def test_changed_label_map_is_detected(bundle_path: Path, tmp_path: Path) -> None:
    other_labels = b'["x", "y", "z"]\n'
    tampered = rewrite_zip(bundle_path, tmp_path / "t.zip", replace={"bestModelMap.json": other_labels})
    with pytest.raises(BundleError, match="'bestModelMap.json'"):
        read_bundle(tampered)


def test_labels_must_equal_the_label_map(bundle_path: Path, tmp_path: Path) -> None:
    tampered = edit_manifest(bundle_path, tmp_path / "t.zip", labels=["blue", "green", "red"])
    with pytest.raises(BundleError, match="differ from bestModelMap.json"):
        read_bundle(tampered)


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil", "C:/evil", "a\\..\\evil"])
def test_unsafe_member_names_are_refused(bundle_path: Path, tmp_path: Path, name: str) -> None:
    tampered = rewrite_zip(bundle_path, tmp_path / "t.zip", add={name: b"boom"})
    with pytest.raises(BundleError, match="unsafe member name"):
        read_manifest(tampered)
    assert not (tmp_path.parent / "evil").exists()


def test_duplicate_members_are_refused(bundle_path: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        tampered = rewrite_zip(bundle_path, tmp_path / "t.zip", add={"bestModelMap.json": b'["a","b","c"]'})
    with pytest.raises(BundleError, match="twice"):
        verify_bundle(tampered)


def test_newer_format_version_asks_to_upgrade(bundle_path: Path, tmp_path: Path) -> None:
    newer = edit_manifest(bundle_path, tmp_path / "t.zip", format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match="format version 2") as info:
        read_manifest(newer)
    assert "upgrade modelbuilder" in (info.value.hint or "")


@pytest.mark.parametrize("version", [0, "1", None, True])
def test_invalid_format_version(bundle_path: Path, tmp_path: Path, version: object) -> None:
    bad = edit_manifest(bundle_path, tmp_path / "t.zip", format_version=version)
    with pytest.raises(BundleError, match="integer format_version"):
        read_manifest(bad)


def test_not_a_zip(tmp_path: Path) -> None:
    fake = tmp_path / "MLModel.zip"
    fake.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(BundleError, match="is not a zip archive"):
        verify_bundle(fake)


def test_missing_bundle_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist") as info:
        read_manifest(tmp_path / "nope.zip")
    assert "completed run" in (info.value.hint or "")


@pytest.mark.parametrize("member", ["bestModel.onnx", "bestModelMap.json", "manifest.json"])
def test_missing_member(bundle_path: Path, tmp_path: Path, member: str) -> None:
    tampered = rewrite_zip(bundle_path, tmp_path / "t.zip", drop=(member,))
    with pytest.raises(BundleError, match=f"(missing its member '{member}'|has no {member})"):
        verify_bundle(tampered)


def test_manifest_that_is_not_json(bundle_path: Path, tmp_path: Path) -> None:
    tampered = rewrite_zip(bundle_path, tmp_path / "t.zip", replace={"manifest.json": b"{not json"})
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tampered)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"labels": "red"}, "'labels' as a JSON list"),
        ({"preprocessing": {"crop_size": 3}}, "is invalid"),
        ({"members": {"bestModel.onnx": {"sha256": "x", "size": 1}, "bestModelMap.json": OK}}, "invalid"),
        ({"members": {"bestModel.onnx": {**OK, "size": -1}, "bestModelMap.json": OK}}, "invalid entry"),
        ({"members": {"bestModel.onnx": OK, "bestModelMap.json": OK, "manifest.json": OK}}, "invalid entry"),
        ({"model": "other.onnx"}, "does not list its member 'other.onnx'"),
        ({"input": {"name": "input1"}}, "'name' \\(string\\) and 'shape'"),
    ],
)
def test_malformed_manifest_fields(bundle_path: Path, tmp_path: Path, change: dict, match: str) -> None:
    with pytest.raises(BundleError, match=match):
        read_manifest(edit_manifest(bundle_path, tmp_path / "t.zip", **change))


def test_manifest_that_disagrees_with_the_model_fails_verification(bundle_path: Path, tmp_path: Path) -> None:
    manifest = read_manifest(bundle_path)
    renamed = edit_manifest(bundle_path, tmp_path / "t.zip", input={**manifest["input"], "name": "pixels"})
    read_bundle(renamed)  # hashes are fine ...
    with pytest.raises(BundleError, match="must be named 'pixels'"):
        verify_bundle(renamed)  # ... but the model's input is input1


def test_label_map_round_trip_and_errors(tmp_path: Path) -> None:
    path = write_label_map(tmp_path / "bestModelMap.json", ["daisy", "rose", "tulipán"])
    assert read_label_map(path) == ["daisy", "rose", "tulipán"]
    (tmp_path / "bad.json").write_text('{"0": "daisy"}', encoding="utf-8")
    with pytest.raises(BundleError, match="JSON array of unique label names"):
        read_label_map(tmp_path / "bad.json")
    with pytest.raises(BundleError, match="does not exist"):
        read_label_map(tmp_path / "missing.json")
    with pytest.raises(InvalidParameterError):
        write_label_map(tmp_path / "x.json", ["a", "a"])
