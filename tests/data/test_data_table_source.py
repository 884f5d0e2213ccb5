"""scan_dataset on CSV/TSV files with ImagePath,Label columns."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import make_image, make_image_folder, write_truncated
from modelbuilder.data import Dataset, scan_dataset
from modelbuilder.errors import DatasetError

GOOD_ROWS = [(f"images/label{c}/label{c}_{i}.png", f"label{c}") for c in range(2) for i in range(3)]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    make_image_folder(tmp_path / "images", classes=2, per_class=3)
    return tmp_path


def write_table(path: Path, header: str, rows: list[tuple[str, str]], delimiter: str = ",") -> Path:
    lines = [header] + [f"{image}{delimiter}{label}" for image, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pairs(dataset: Dataset, base: Path) -> set[tuple[str, str]]:
    return {(item.path.relative_to(base).as_posix(), item.label) for item in dataset.items}


@pytest.mark.parametrize(
    ("name", "header", "delimiter"),
    [
        pytest.param("data.csv", "ImagePath,Label", ",", id="csv"),
        pytest.param("data.csv", "imagepath,LABEL", ",", id="csv-any-case"),
        pytest.param("data.tsv", "ImagePath\tLabel", "\t", id="tsv"),
        pytest.param("data.csv", "ImagePath\tLabel", "\t", id="tab-separated-named-csv"),
        pytest.param("data.txt", "Image Path;Label", ";", id="semicolon-txt"),
        pytest.param("data.csv", "Label,Extra,ImagePath", ",", id="columns-in-any-order"),
    ],
)
def test_table_sources(folder: Path, name: str, header: str, delimiter: str) -> None:
    rows = GOOD_ROWS
    if header.startswith("Label"):
        rows = [(label, f"x{delimiter}{image}") for image, label in GOOD_ROWS]
    dataset = scan_dataset(write_table(folder / name, header, rows, delimiter), on_bad_image="fail")
    assert dataset.labels == ["label0", "label1"]
    assert pairs(dataset, folder) == set(GOOD_ROWS)
    assert dataset.issues == []
    assert dataset.source == (folder / name).absolute()


def test_byte_order_mark_absolute_paths_and_windows_separators(folder: Path, tmp_path: Path) -> None:
    rows = [(str((folder / image).absolute()), label) for image, label in GOOD_ROWS[:3]]
    rows += [(image.replace("/", "\\"), label) for image, label in GOOD_ROWS[3:]]
    table = folder / "sub" / "list.csv"
    table.parent.mkdir()
    rows = [(image if Path(image).is_absolute() else "..\\" + image, label) for image, label in rows]
    table.write_text("\ufeffImagePath,Label\n" + "".join(f"{i},{lab}\n" for i, lab in rows), encoding="utf-8")
    dataset = scan_dataset(table)
    assert pairs(dataset, folder) == set(GOOD_ROWS)


def test_csv_and_folder_of_the_same_images_have_the_same_fingerprint(folder: Path) -> None:
    table = write_table(folder / "data.csv", "ImagePath,Label", GOOD_ROWS)
    assert scan_dataset(table).fingerprint() == scan_dataset(folder / "images").fingerprint()


def test_missing_and_bad_files_are_skipped_or_fail(folder: Path) -> None:
    write_truncated(folder / "images" / "broken.png")
    rows = GOOD_ROWS + [("images/gone.png", "label0"), ("images/broken.png", "label1")]
    table = write_table(folder / "data.csv", "ImagePath,Label", rows)
    dataset = scan_dataset(table)
    assert pairs(dataset, folder) == set(GOOD_ROWS)
    kinds = {(issue.path, issue.kind, issue.action) for issue in dataset.issues}
    assert kinds == {
        ("images/gone.png", "missing_file", "skipped"),
        ("images/broken.png", "corrupt", "skipped"),
    }
    gone = next(issue for issue in dataset.issues if issue.kind == "missing_file")
    assert gone.message == "images/gone.png (label 'label0') is listed but does not exist."
    with pytest.raises(DatasetError) as caught:
        scan_dataset(table, on_bad_image="fail")
    assert "has 2 bad files" in str(caught.value)
    assert "images/gone.png: missing_file:" in str(caught.value)
    assert caught.value.hint is not None and "--on-bad-image skip" in caught.value.hint


def test_rows_without_a_value_are_reported(folder: Path) -> None:
    table = write_table(
        folder / "data.csv", "ImagePath,Label", GOOD_ROWS + [("images/label0/label0_0.png", "")]
    )
    (folder / "data.csv").write_text(table.read_text() + ",label1\n\n")
    dataset = scan_dataset(table)
    assert pairs(dataset, folder) == set(GOOD_ROWS)
    messages = sorted(issue.message for issue in dataset.issues)
    assert messages == [
        "data.csv line 8 has no Label; row skipped.",
        "data.csv line 9 has no ImagePath; row skipped.",
    ]
    assert {issue.kind for issue in dataset.issues} == {"missing_value"}


def test_listing_one_file_twice(folder: Path) -> None:
    same = write_table(folder / "same.csv", "ImagePath,Label", GOOD_ROWS + [GOOD_ROWS[0]])
    dataset = scan_dataset(same, on_bad_image="fail")
    assert pairs(dataset, folder) == set(GOOD_ROWS)
    [issue] = dataset.issues
    assert (issue.kind, issue.action) == ("duplicate", "skipped")
    assert "is listed more than once" in issue.message
    contradicting = write_table(
        folder / "two.csv", "ImagePath,Label", GOOD_ROWS + [(GOOD_ROWS[0][0], "label1")]
    )
    dataset = scan_dataset(contradicting)
    assert pairs(dataset, folder) == set(GOOD_ROWS[1:])
    assert [issue.kind for issue in dataset.issues] == ["duplicate_across_labels"] * 2


@pytest.mark.parametrize(
    ("content", "message", "hint"),
    [
        pytest.param(
            "Path,Class\na.png,cat\n", "has no ImagePath and no Label column", "ImagePath,Label", id="both"
        ),
        pytest.param(
            "ImagePath,Category\na.png,cat\n", "has no Label column", "ImagePath,Label", id="no-label"
        ),
        pytest.param("", "found nothing", "ImagePath,Label", id="empty-file"),
        pytest.param(
            "ImagePath,Label\n\n", "has a header but no rows", "one line per image", id="header-only"
        ),
    ],
)
def test_table_format_errors(tmp_path: Path, content: str, message: str, hint: str) -> None:
    table = tmp_path / "data.csv"
    table.write_text(content)
    with pytest.raises(DatasetError) as caught:
        scan_dataset(table)
    assert message in str(caught.value)
    assert caught.value.hint is not None and hint in caught.value.hint


def test_single_label_table(folder: Path) -> None:
    table = write_table(folder / "data.csv", "ImagePath,Label", GOOD_ROWS[:3])
    with pytest.raises(DatasetError, match=r"Data file '.*data\.csv' has only one label, 'label0'") as caught:
        scan_dataset(table)
    assert caught.value.hint is not None and "Add a label with images" in caught.value.hint


def test_table_label_with_one_usable_image(folder: Path) -> None:
    make_image(1, 5).save(folder / "images" / "extra.png")
    rows = GOOD_ROWS + [("images/extra.png", "label2")]
    with pytest.raises(DatasetError, match="'label2' has 1"):
        scan_dataset(write_table(folder / "data.csv", "ImagePath,Label", rows))


def test_missing_table_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"Data file '.*labels\.csv' does not exist") as caught:
        scan_dataset(tmp_path / "labels.csv")
    assert caught.value.hint is not None and "ImagePath,Label" in caught.value.hint
