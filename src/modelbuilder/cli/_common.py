"""What every command shares: the ``--workspace`` and ``--json`` options, output to stdout/stderr, errors.

Data goes to stdout (``--json`` prints one JSON document and nothing else there); messages, progress
and errors go to stderr. Expected errors (``ModelBuilderError``) become ``Error: <message>`` and
``Hint: <hint>`` on stderr with exit code 1; ``MODELBUILDER_DEBUG=1`` adds the traceback. Ctrl-C exits
with 130.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from .. import settings
from ..errors import ModelBuilderError
from ..services.workspaces import WorkspaceSession, open_workspace

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

WorkspaceOption = Annotated[
    str | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace name (default: $MODELBUILDER_WORKSPACE or 'default', created on first use).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (stable snake_case fields) only.")]


#: Width of tables written to a pipe or file (a terminal uses its own width).
PIPE_WIDTH = 200


def stdout_console() -> Console:
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def message(text: str) -> None:
    """A human message on stderr."""
    sys.stderr.write(f"{text}\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    """One JSON document on stdout (and nothing else)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    table = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    stdout_console().print(table)


def print_fields(pairs: list[tuple[str, Any]]) -> None:
    """``name: value`` lines, aligned, on stdout."""
    width = max((len(name) for name, _ in pairs), default=0)
    for name, value in pairs:
        sys.stdout.write(f"{name.ljust(width)}  {'' if value is None else value}\n")


@contextmanager
def workspace_session(name: str | None) -> Iterator[WorkspaceSession]:
    """Open the workspace of ``--workspace`` (the default one when None) for one command."""
    session = open_workspace(name)
    try:
        yield session
    finally:
        session.close()


def report_error(exc: ModelBuilderError) -> None:
    if settings.debug():
        traceback.print_exception(exc, file=sys.stderr)
    lines = str(exc).splitlines() or [type(exc).__name__]
    message(f"Error: {' '.join(line.strip() for line in lines)}")
    if exc.hint:
        message(f"Hint: {exc.hint}")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextmanager
def command_logging() -> Iterator[None]:
    """While a command runs, library log records reach stderr only when they matter: errors, or
    everything with MODELBUILDER_DEBUG=1 (expected problems are reported as ``Error:``/``Hint:``)."""
    package = logging.getLogger("modelbuilder")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.setLevel(logging.DEBUG if settings.debug() else logging.ERROR)
    previous = package.level
    if settings.debug():
        package.setLevel(logging.DEBUG)
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)


class ErrorHandlingGroup(TyperGroup):
    """The top-level group: maps ModelBuilderError to exit code 1 and Ctrl-C to 130, for every command."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer vendors click)
        try:
            with command_logging():
                return super().invoke(ctx)
        except ModelBuilderError as exc:
            report_error(exc)
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            message("Interrupted.")
            raise typer.Exit(EXIT_INTERRUPTED) from None
