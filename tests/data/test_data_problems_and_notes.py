"""Problems with the data (a file left out or ignored) are told apart from notes about files that were used
(converted to RGB, rotated upright), by one rule (``DataIssue.is_note``) that the scan's summary line (what
the CLI and the run log show), ``Dataset.problems``/``notes`` and the portal's data preview share: 500
greyscale images are 500 notes, not "500 issues"."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from factories import (
    make_image,
    make_image_folder,
    write_exif_rotated_jpeg,
    write_mode_image,
    write_truncated,
)
from modelbuilder.data import DataIssue, scan_dataset, summarize_issues
from modelbuilder.data.dataset import ACTIONS, CONVERTED, IGNORED, NOTE_ACTIONS, ROTATED, SKIPPED, WARNING


def _greyscale_folder(root: Path, per_label: int = 6) -> Path:
    """Labels a and b of distinct 8-bit greyscale PNGs (mode L: each is converted to RGB when used)."""
    for number, label in enumerate(("a", "b")):
        (root / label).mkdir(parents=True)
        for index in range(per_label):
            make_image(number, index, 16).convert("L").save(root / label / f"{index}.png")
    return root


@pytest.mark.parametrize("action, note", [(CONVERTED, True), (ROTATED, True), (SKIPPED, False),
                                          (IGNORED, False), (WARNING, False)])
def test_only_kept_and_changed_files_are_notes(action: str, note: bool) -> None:
    assert DataIssue("x.png", "kind", "x.png ...", action).is_note is note
    assert set(NOTE_ACTIONS) < set(ACTIONS)


def test_a_greyscale_data_set_has_notes_and_no_problems(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="modelbuilder.data.scan"):
        dataset = scan_dataset(_greyscale_folder(tmp_path / "data"))
    assert len(dataset.items) == 12 and len(dataset.issues) == 12
    assert dataset.problems() == [] and len(dataset.notes()) == 12
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Scanned")]
    assert line.endswith("12 images, 2 labels, no problems; 12 notes (12 converted to RGB)")
    assert "issues" not in line


def test_problems_are_counted_apart_from_notes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_image_folder(tmp_path / "data", classes=2, per_class=4)
    write_truncated(root / "label0" / "broken.png")  # corrupt: skipped
    (root / "label1" / "readme.jpg").write_text("not an image")  # skipped
    shutil.copy(root / "label0" / "label0_0.png", root / "label1" / "same.png")  # duplicate across labels
    (root / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    write_mode_image(root / "label0" / "grey.png", "L")  # converted: a note
    write_exif_rotated_jpeg(root / "label1" / "turned.jpg")  # rotated: a note
    with caplog.at_level(logging.INFO, logger="modelbuilder.data.scan"):
        dataset = scan_dataset(root)
    problems, notes = dataset.problems(), dataset.notes()
    assert {i.kind for i in notes} == {"color_mode", "exif_rotation"}
    assert all(not i.is_note for i in problems) and len(problems) + len(notes) == len(dataset.issues)
    skipped = len(dataset.skipped())
    assert skipped >= 3 and {"corrupt", "not_an_image"} <= {i.kind for i in problems}
    ignored = sum(1 for i in problems if i.action == IGNORED)
    expected = (f"{len(problems)} problems ({ignored} ignored, {skipped} skipped); "
                f"2 notes (1 converted to RGB, 1 rotated upright)")
    assert summarize_issues(dataset.issues) == expected
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Scanned")]
    assert line.endswith(expected)


def test_the_portal_preview_folds_the_same_notes(tmp_path: Path) -> None:
    """The preview lists problems one per row and folds many notes of a kind into one row: by the same
    rule as the scan's summary."""
    from modelbuilder.portal.datasources import MAX_NOTES_LISTED, build_preview

    root = _greyscale_folder(tmp_path / "data", per_label=MAX_NOTES_LISTED + 1)
    write_truncated(root / "a" / "broken.png")
    preview = build_preview("folder:0:data", root)
    converted = 2 * (MAX_NOTES_LISTED + 1)
    notes = [p for p in preview.problems if p.action == CONVERTED]
    problems = [p for p in preview.problems if p.action != CONVERTED]
    assert len(notes) == 1 and notes[0].message.startswith(f"{converted} images were converted")
    assert [p.kind for p in problems] == ["corrupt"]
    assert summarize_issues(scan_dataset(root).issues) == (
        f"1 problem (1 skipped); {converted} notes ({converted} converted to RGB)")


def test_no_issues_reads_as_no_problems() -> None:
    assert summarize_issues([]) == "no problems"
