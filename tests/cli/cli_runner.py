"""Runs ``modelbuilder`` commands in-process for the CLI tests (typer's CliRunner)."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from modelbuilder.cli import app


class Cli:
    """Runs ``modelbuilder`` commands in-process."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
