"""``modelbuilder train`` refuses bad input before a run exists: exit code 1, one ``Error:`` line and one
``Hint:`` line, nothing on stdout, and no run (nor experiment) left behind in the workspace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runner import Cli

from factories import make_image_folder
from modelbuilder.services import open_workspace


def _missing(tmp_path: Path, data: Path) -> list[str]:
    return [str(tmp_path / "imagse")]


def _empty(tmp_path: Path, data: Path) -> list[str]:
    (tmp_path / "empty").mkdir()
    return [str(tmp_path / "empty")]


def _one_label(tmp_path: Path, data: Path) -> list[str]:
    return [str(make_image_folder(tmp_path / "cats", classes=1, per_class=3, size=8))]


def _unknown_architecture(tmp_path: Path, data: Path) -> list[str]:
    return [str(data), "--architecture", "resnet-50"]


def _unreadable_csv(tmp_path: Path, data: Path) -> list[str]:
    table = tmp_path / "labels.csv"
    table.write_bytes(b"ImagePath,Label\n\xff\xfe,cat\n")
    return [str(table)]


def _validation_labels_differ(tmp_path: Path, data: Path) -> list[str]:
    validation = make_image_folder(tmp_path / "validation", classes=2, per_class=2, size=8)
    (validation / "label1").rename(validation / "dog")
    return [str(data), "--validation-data", str(validation)]


CASES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "missing data folder": (_missing, "does not exist"),
    "empty data folder": (_empty, "is empty"),
    "a single label": (_one_label, "has only one label, 'label0'"),
    "unknown architecture": (_unknown_architecture, "Backbone 'resnet-50' is not registered"),
    "unreadable CSV": (_unreadable_csv, "cannot be read as UTF-8 text"),
    "validation labels differ": (_validation_labels_differ, "does not match the training labels"),
}


@pytest.mark.usefixtures("use_fake_trainer")
@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_before_a_run_exists(case: str, cli: Cli, data: Path, tmp_path: Path) -> None:
    arguments, expected = CASES[case]
    result = cli("train", *arguments(tmp_path, data), "--time", "10s", "--no-portal")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    hints = [line for line in lines if line.startswith("Hint:")]
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    assert expected in errors[0]
    assert result.stdout == ""
    with open_workspace() as session:
        assert session.store.count_runs() == 0
        assert session.store.list_experiments() == []
