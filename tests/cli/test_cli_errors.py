"""How the CLI reports errors: one line and a hint, exit 1, traceback only with MODELBUILDER_DEBUG=1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_runner import Cli

from modelbuilder.cli import _common
from modelbuilder.cli.app import app
from modelbuilder.errors import InvalidStateError


def test_expected_errors_print_one_line_and_a_hint(cli: Cli) -> None:
    result = cli("run", "show", "0123456789ab")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: Run '0123456789ab' not found")
    assert lines[1].startswith("Hint: ")


def test_debug_variable_shows_the_traceback(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBUILDER_DEBUG", "1")
    result = cli("run", "show", "0123456789ab")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr and "RunNotFoundError" in result.stderr
    assert "Error: Run '0123456789ab' not found" in result.stderr


def test_multi_line_messages_are_joined_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    _common.report_error(InvalidStateError("first part\nsecond part", hint="do this"))
    assert capsys.readouterr().err.splitlines() == ["Error: first part second part", "Hint: do this"]


def test_ctrl_c_exits_130(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("modelbuilder.services.workspaces.list_workspaces", interrupted)
    result = cli("workspace", "list")
    assert result.exit_code == 130 and "Interrupted." in result.stderr


def test_usage_errors_exit_2(cli: Cli) -> None:
    assert cli("compute", "create", "cpu-1").exit_code == 2  # --size missing
    assert cli("no-such-noun").exit_code == 2


def test_unexpected_errors_are_not_disguised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("modelbuilder.services.workspaces.list_workspaces", broken)
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["workspace", "list"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_every_command_takes_workspace_and_every_show_and_list_takes_json() -> None:
    import typer.main

    group = typer.main.get_command(app)
    seen = 0
    for noun, command in group.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", {noun: command})
        for verb, sub in subcommands.items():
            options = {opt for param in sub.params for opt in getattr(param, "opts", [])}
            assert "--workspace" in options, f"{noun} {verb}"
            if verb in ("show", "list", "sizes"):
                assert "--json" in options, f"{noun} {verb}"
            seen += 1
    assert seen >= 20


def test_the_console_script_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from modelbuilder.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and "resource-group" in result.stdout
