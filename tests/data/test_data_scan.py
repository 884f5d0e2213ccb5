"""scan_dataset on label folders: bad files, awkward images, hidden entries, duplicates, errors."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from factories import (
    make_image,
    make_image_folder,
    save_image_bytes,
    write_exif_rotated_jpeg,
    write_mode_image,
    write_png_bomb,
    write_truncated,
)
from modelbuilder.data import DataIssue, Dataset, scan_dataset
from modelbuilder.data import scan as scan_module
from modelbuilder.errors import DatasetError, InvalidParameterError

GOOD = {f"label{c}/label{c}_{i}.png" for c in range(2) for i in range(3)}


def relative_items(dataset: Dataset) -> set[str]:
    return {item.path.relative_to(dataset.source).as_posix() for item in dataset.items}


def issues_for(dataset: Dataset, path: str) -> list[DataIssue]:
    return [issue for issue in dataset.issues if issue.path == path]


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """label0/ and label1/ with 3 good 32x32 PNGs each (the GOOD set)."""
    return make_image_folder(tmp_path / "data", classes=2, per_class=3)


def test_clean_folder_scans_without_issues(data: Path) -> None:
    dataset = scan_dataset(data)
    assert dataset.source == data.absolute()
    assert dataset.labels == ["label0", "label1"]
    assert relative_items(dataset) == GOOD
    assert dataset.issues == []
    assert dataset.counts() == {"label0": 3, "label1": 3}
    assert dataset.typical_size() == (32, 32)
    first = dataset.items[0]
    assert (first.label, first.width, first.height, first.mode, first.format) == (
        "label0",
        32,
        32,
        "RGB",
        "PNG",
    )
    assert len(first.sha256) == 64


def _write_bytes(data: bytes) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return write


# (relative path, writer, expected kind, message fragment, counts as a bad image for on_bad_image="fail")
BAD_FILES = [
    pytest.param(
        "label0/broken.png",
        write_truncated,
        "corrupt",
        "looks like a PNG image but cannot be decoded",
        True,
        id="truncated-png",
    ),
    pytest.param(
        "label0/broken.jpg",
        lambda p: write_truncated(p, "JPEG"),
        "corrupt",
        "truncated",
        True,
        id="truncated-jpeg",
    ),
    pytest.param(
        "label1/photo.jpg",
        _write_bytes(b"this is not a photo\n"),
        "not_an_image",
        "it contains text",
        True,
        id="text-named-jpg",
    ),
    pytest.param(
        "label1/page.jpg",
        _write_bytes(b"<!DOCTYPE html><html><body>403</body></html>"),
        "not_an_image",
        "HTML page",
        True,
        id="html-named-jpg",
    ),
    pytest.param(
        "label1/empty.png", _write_bytes(b""), "not_an_image", "the file is empty", True, id="empty-file"
    ),
    pytest.param(
        "label0/bomb.png",
        write_png_bomb,
        "decompression_bomb",
        "too large to decode safely",
        True,
        id="bomb-400-megapixels",
    ),
    pytest.param(
        "label0/big.png",
        lambda p: write_png_bomb(p, 10_000, 10_000),
        "decompression_bomb",
        "100000000 pixels",
        True,
        id="bomb-100-megapixels-warning-level",
    ),
    pytest.param(
        "label1/phone.heic",
        _write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64),
        "unsupported_format",
        "cannot read HEIF",
        True,
        id="heif-unsupported",
    ),
    pytest.param(
        "label0/README.md",
        _write_bytes(b"# Cats\nPhotos of cats.\n"),
        "not_an_image",
        "it contains text",
        False,
        id="readme-in-label-folder",
    ),
    pytest.param(
        "label1/labels.csv",
        _write_bytes(b"a,b\n1,2\n"),
        "not_an_image",
        "it contains text",
        False,
        id="csv-in-label-folder",
    ),
]


@pytest.mark.parametrize(("relative", "write", "kind", "fragment", "fatal"), BAD_FILES)
def test_bad_file_is_reported_and_skipped(
    data: Path, relative: str, write: Callable[[Path], Path], kind: str, fragment: str, fatal: bool
) -> None:
    write(data / relative)
    dataset = scan_dataset(data, on_bad_image="skip")
    assert relative_items(dataset) == GOOD  # the bad file is out, every good image is in
    [issue] = issues_for(dataset, relative)
    assert (issue.kind, issue.action) == (kind, "skipped")
    assert issue.message.startswith(relative)
    assert fragment in issue.message
    assert dataset.skipped() == [issue]


@pytest.mark.parametrize(("relative", "write", "kind", "fragment", "fatal"), BAD_FILES)
def test_bad_file_with_on_bad_image_fail(
    data: Path, relative: str, write: Callable[[Path], Path], kind: str, fragment: str, fatal: bool
) -> None:
    write(data / relative)
    if not fatal:  # a stray document is reported, but does not stop the run
        dataset = scan_dataset(data, on_bad_image="fail")
        assert relative_items(dataset) == GOOD
        assert [issue.kind for issue in issues_for(dataset, relative)] == [kind]
        return
    with pytest.raises(DatasetError) as caught:
        scan_dataset(data, on_bad_image="fail")
    message = str(caught.value)
    assert "has 1 bad file and on_bad_image is 'fail'" in message
    assert f"{relative}: {kind}:" in message
    assert fragment in message
    assert caught.value.hint is not None
    assert "--on-bad-image skip" in caught.value.hint
    assert "Fix or remove" in caught.value.hint


def test_fail_lists_ten_bad_files_and_counts_the_rest(data: Path) -> None:
    for i in range(12):
        (data / "label0" / f"bad{i:02d}.jpg").write_text("not an image")
    with pytest.raises(DatasetError) as caught:
        scan_dataset(data, on_bad_image="fail")
    message = str(caught.value)
    assert "has 12 bad files" in message
    assert "label0/bad09.jpg" in message
    assert "label0/bad10.jpg" not in message
    assert "... and 2 more" in message


def test_png_named_txt_is_an_image(data: Path) -> None:
    (data / "label1" / "actually.txt").write_bytes(save_image_bytes(make_image(1, 7), "PNG"))
    dataset = scan_dataset(data)
    assert relative_items(dataset) == GOOD | {"label1/actually.txt"}
    item = next(item for item in dataset.items if item.path.name == "actually.txt")
    assert (item.label, item.format) == ("label1", "PNG")
    assert dataset.issues == []


def test_exif_rotated_jpeg_is_upright_and_reported(data: Path) -> None:
    write_exif_rotated_jpeg(data / "label1" / "phone.jpg", width=40, height=20, orientation=6)
    dataset = scan_dataset(data)
    assert relative_items(dataset) == GOOD | {"label1/phone.jpg"}
    item = next(item for item in dataset.items if item.path.name == "phone.jpg")
    assert (item.width, item.height, item.format) == (20, 40, "JPEG")
    [issue] = issues_for(dataset, "label1/phone.jpg")
    assert (issue.kind, issue.action) == ("exif_rotation", "rotated")
    assert "EXIF orientation 6" in issue.message
    assert "now 20x40" in issue.message


@pytest.mark.parametrize(
    ("mode", "name", "fragment"),
    [
        pytest.param("CMYK", "print.jpg", "from CMYK", id="cmyk-jpeg"),
        pytest.param("P", "icon.png", "from palette with transparency (P)", id="palette-transparent-png"),
        pytest.param("I;16", "scan.png", "from 16-bit greyscale (I;16)", id="16-bit-grey-png"),
        pytest.param("RGBA", "logo.png", "from RGBA; transparent areas became white", id="rgba-png"),
        pytest.param("LA", "mask.png", "from greyscale with alpha (LA)", id="la-png"),
        pytest.param("L", "grey.png", "from 8-bit greyscale (L)", id="greyscale-png"),
    ],
)
def test_non_rgb_modes_are_converted_and_reported(data: Path, mode: str, name: str, fragment: str) -> None:
    write_mode_image(data / "label0" / name, mode)
    dataset = scan_dataset(data, on_bad_image="fail")  # conversions are not bad images
    assert relative_items(dataset) == GOOD | {f"label0/{name}"}
    item = next(item for item in dataset.items if item.path.name == name)
    assert (item.mode, item.width, item.height) == (mode, 16, 16)
    [issue] = issues_for(dataset, f"label0/{name}")
    assert (issue.kind, issue.action) == ("color_mode", "converted")
    assert fragment in issue.message
    assert dataset.skipped() == []


def test_hidden_entries_are_ignored_and_reported_once(data: Path) -> None:
    for hidden in (data / ".ipynb_checkpoints", data / "__MACOSX", data / "label0" / ".ipynb_checkpoints"):
        make_image_folder(hidden, classes=1, per_class=2)  # images inside must not be used
    (data / "label0" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1\x00")
    (data / "label1" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    dataset = scan_dataset(data, on_bad_image="fail")
    assert dataset.labels == ["label0", "label1"]
    assert relative_items(dataset) == GOOD
    reported = sorted((issue.path, issue.kind, issue.action) for issue in dataset.issues)
    assert reported == [
        (".ipynb_checkpoints", "hidden", "ignored"),
        ("__MACOSX", "hidden", "ignored"),
        ("label0/.DS_Store", "hidden", "ignored"),
        ("label0/.ipynb_checkpoints", "hidden", "ignored"),
        ("label1/Thumbs.db", "hidden", "ignored"),
    ]
    assert "hidden folder" in issues_for(dataset, "__MACOSX")[0].message


def test_nested_images_belong_to_their_label_folder(data: Path) -> None:
    nested = data / "label1" / "2024" / "june"
    nested.mkdir(parents=True)
    make_image(1, 42).save(nested / "deep.png")
    dataset = scan_dataset(data)
    assert relative_items(dataset) == GOOD | {"label1/2024/june/deep.png"}
    assert next(item for item in dataset.items if item.path.name == "deep.png").label == "label1"
    assert dataset.labels == ["label0", "label1"]


def test_files_outside_label_folders_are_ignored_with_a_note(data: Path) -> None:
    (data / "README.md").write_text("my dataset")
    make_image(0, 99).save(data / "stray.png")
    dataset = scan_dataset(data, on_bad_image="fail")
    assert relative_items(dataset) == GOOD
    assert {(i.path, i.kind, i.action) for i in dataset.issues} == {
        ("README.md", "no_label", "ignored"),
        ("stray.png", "no_label", "ignored"),
    }


def test_duplicate_within_a_label_keeps_the_first_copy(data: Path) -> None:
    shutil.copy(data / "label0" / "label0_1.png", data / "label0" / "again.png")
    dataset = scan_dataset(data, on_bad_image="fail")  # harmless duplicates do not fail a run
    assert relative_items(dataset) == (GOOD - {"label0/label0_1.png"}) | {"label0/again.png"}
    [issue] = dataset.skipped()
    assert (issue.path, issue.kind) == ("label0/label0_1.png", "duplicate")
    assert "is a copy of label0/again.png (label 'label0')" in issue.message


def test_duplicate_across_labels_excludes_every_copy(data: Path) -> None:
    shutil.copy(data / "label0" / "label0_1.png", data / "label1" / "confusing.png")
    dataset = scan_dataset(data)
    assert relative_items(dataset) == GOOD - {"label0/label0_1.png"}
    copies = sorted(issue.path for issue in dataset.issues if issue.kind == "duplicate_across_labels")
    assert copies == ["label0/label0_1.png", "label1/confusing.png"]
    assert all(issue.action == "skipped" for issue in dataset.issues)
    assert "label1/confusing.png ('label1')" in dataset.issues[0].message
    with pytest.raises(DatasetError, match="duplicate_across_labels") as caught:
        scan_dataset(data, on_bad_image="fail")
    assert "label1/confusing.png" in str(caught.value)


@pytest.mark.parametrize(
    ("setup", "message", "hint"),
    [
        pytest.param(lambda root: root, "does not exist", "one sub-folder per label", id="missing-folder"),
        pytest.param(
            lambda root: _touch(root.with_suffix(".zip")),
            "is a file of an unknown type ('.zip')",
            "Extract the archive",
            id="zip-file",
        ),
        pytest.param(lambda root: _mkdir(root), "is empty", "one sub-folder per label", id="empty-folder"),
        pytest.param(
            lambda root: _mkdir(root / ".git").parent,
            "is empty (no label folders, no images); it holds only hidden entries (.git)",
            "one sub-folder per label",
            id="only-hidden-folders",
        ),
        pytest.param(
            lambda root: _images_in_root(root),
            "has no label sub-folders; it holds 2 file(s)",
            "Move the images into one sub-folder per label",
            id="images-without-label-folders",
        ),
        pytest.param(
            lambda root: make_image_folder(root, classes=1, per_class=4),
            "has only one label, 'label0' (4 usable",
            "Add a label folder",
            id="single-label",
        ),
        pytest.param(
            lambda root: _shrink(make_image_folder(root, classes=3, per_class=3), "label2", keep=1),
            "every label needs at least 2 usable images; 'label2' has 1",
            "remove the label folder",
            id="label-with-one-image",
        ),
        pytest.param(
            lambda root: _empty_label(make_image_folder(root, classes=2, per_class=3)),
            "'label1' has 0 (1 bad file skipped",
            "Add images to this label",
            id="label-only-bad-files",
        ),
    ],
)
def test_dataset_level_errors_say_what_and_how_to_fix(
    tmp_path: Path, setup: Callable[[Path], Path], message: str, hint: str
) -> None:
    source = setup(tmp_path / "data")
    with pytest.raises(DatasetError) as caught:
        scan_dataset(source)
    assert message in str(caught.value)
    assert caught.value.hint is not None and hint in caught.value.hint


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _images_in_root(root: Path) -> Path:
    root.mkdir(parents=True)
    make_image(0, 0).save(root / "a.png")
    make_image(1, 0).save(root / "b.png")
    return root


def _shrink(root: Path, label: str, keep: int) -> Path:
    for path in sorted((root / label).iterdir())[keep:]:
        path.unlink()
    return root


def _empty_label(root: Path) -> Path:
    for path in (root / "label1").iterdir():
        path.unlink()
    write_truncated(root / "label1" / "broken.png")
    return root


def test_single_label_error_names_the_label_in_the_message(tmp_path: Path) -> None:
    source = make_image_folder(tmp_path / "cats", classes=1, per_class=2)
    (source / "label0").rename(source / "cat")
    with pytest.raises(DatasetError, match=r"only one label, 'cat' \(2 usable images\)"):
        scan_dataset(source)


def test_on_bad_image_must_be_skip_or_fail(data: Path) -> None:
    with pytest.raises(InvalidParameterError, match=r"must be 'skip' or 'fail'\. Got 'ignore' instead"):
        scan_dataset(data, on_bad_image="ignore")


def test_validation_data_must_match_training_labels(tmp_path: Path) -> None:
    validation = make_image_folder(tmp_path / "val", classes=2, per_class=1)
    dataset = scan_dataset(validation, require_labels=["label1", "label0"])  # 1 image per label is enough
    assert dataset.labels == ["label0", "label1"]
    assert dataset.counts() == {"label0": 1, "label1": 1}
    with pytest.raises(DatasetError) as caught:
        scan_dataset(validation, require_labels=["label0", "label1", "label2"])
    assert "without usable images here: 'label2'" in str(caught.value)
    assert caught.value.hint is not None and "same labels as the training data" in caught.value.hint
    with pytest.raises(DatasetError, match="not in the training data: 'label1'"):
        scan_dataset(validation, require_labels=["label0"])


def test_progress_reports_every_file(data: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    scan_dataset(data, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (6, 6)
    done = [d for d, total in calls if total is not None]
    assert done == sorted(done)


def test_fingerprint_depends_on_content_and_labels_not_on_paths(data: Path, tmp_path: Path) -> None:
    original = scan_dataset(data).fingerprint()
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(data, moved)
    for path in sorted(moved.rglob("*.png")):
        path.rename(path.with_name(f"x_{path.name}"))
    assert scan_dataset(moved).fingerprint() == original
    shutil.move(str(moved / "label0" / "x_label0_0.png"), str(moved / "label1" / "x_label0_0.png"))
    assert scan_dataset(moved).fingerprint() != original


def test_typical_size_is_the_median(tmp_path: Path) -> None:
    for index, (width, height) in enumerate([(10, 80), (20, 60), (30, 40), (400, 20)]):
        folder = tmp_path / "data" / f"label{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        make_image(index % 2, index, 400).crop((0, 0, width, height)).save(folder / f"{index}.png")
    assert scan_dataset(tmp_path / "data").typical_size() == (20, 40)


def _mixed_folder(root: Path) -> Path:
    make_image_folder(root, classes=3, per_class=8)
    write_truncated(root / "label0" / "broken.png")
    (root / "label1" / "notes.jpg").write_text("text")
    write_mode_image(root / "label2" / "grey.png", "L")
    shutil.copy(root / "label1" / "label1_0.png", root / "label1" / "copy.png")
    return root


@pytest.mark.parametrize("with_thread", [False, True], ids=["fork", "forkserver-when-threads-run"])
def test_worker_pool_gives_the_same_result_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_thread: bool
) -> None:
    if scan_module.MAX_WORKERS < 2 or (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPUs for the worker pool")
    root = _mixed_folder(tmp_path / "data")
    serial = scan_dataset(root)
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(scan_module, "CHUNK_SIZE", 5)
    used: list[str] = []
    real_start_method = scan_module._start_method

    def recording_start_method() -> str:
        used.append(real_start_method())
        return used[-1]

    monkeypatch.setattr(scan_module, "_start_method", recording_start_method)
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    if with_thread:
        helper.start()
    alone = threading.active_count() == 1
    try:
        calls: list[tuple[int, int | None]] = []
        parallel = scan_dataset(root, progress=lambda done, total: calls.append((done, total)))
    finally:
        stop.set()
    assert used == (["fork"] if alone else ["forkserver"])
    assert parallel.items == serial.items
    assert parallel.issues == serial.issues
    assert parallel.fingerprint() == serial.fingerprint()
    assert calls[-1] == (len(parallel.items) + 3, len(parallel.items) + 3)


def test_a_broken_worker_pool_falls_back_to_one_process(
    data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise scan_module.BrokenProcessPool("a worker was killed")

    monkeypatch.setattr(scan_module, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(scan_module, "_probe_parallel", broken)
    dataset = scan_dataset(data)
    assert relative_items(dataset) == GOOD
    assert "Parallel image check failed (a worker was killed)" in caplog.text
