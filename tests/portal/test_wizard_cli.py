"""``modelbuilder portal --data-root DIR`` (repeatable): the folders reach the app's folder picker, a
missing folder is refused before anything starts, and without the option nothing is open to the picker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelbuilder import settings
from modelbuilder.cli import app


def _fake_server(monkeypatch: pytest.MonkeyPatch) -> list[list[Path]]:
    seen: list[list[Path]] = []
    module = type(sys)("modelbuilder.portal.server")
    module.serve = lambda *args, **kwargs: seen.append(settings.portal_data_roots())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelbuilder.portal.server", module)
    monkeypatch.setenv(settings.PORTAL_DATA_ROOTS_ENV, "")  # restored after the test, whatever the CLI sets
    return seen


def test_data_roots_reach_the_portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _fake_server(monkeypatch)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    result = CliRunner().invoke(app, ["portal", "--port", "9001", "--data-root", str(first),
                                      "--data-root", str(second)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert seen == [[first.resolve(), second.resolve()]]


def test_a_missing_data_root_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _fake_server(monkeypatch)
    result = CliRunner().invoke(app, ["portal", "--data-root", str(tmp_path / "nope")],
                                catch_exceptions=False)
    assert result.exit_code == 1 and seen == []
    assert "is not a folder" in result.stderr and "Hint:" in result.stderr


def test_without_the_option_no_folder_is_open(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _fake_server(monkeypatch)
    result = CliRunner().invoke(app, ["portal", "--port", "9001"], catch_exceptions=False)
    assert result.exit_code == 0 and seen == [[]]
