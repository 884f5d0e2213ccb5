"""The one place where hints spell CLI commands.

Errors raised below ``cli/`` tell the user what to type next. They build that text here, so a renamed command
or option is changed once, and ``tests/test_hints.py`` checks every call of :func:`command` in the source, and
every command line built while the tests run, against the real Typer app.

    >>> command("run", "download", "3f2a9c1b", output="out/")
    'modelbuilder run download 3f2a9c1b --output out/'
    >>> command("compute", "create", "gpu-1", size="SIZE", workspace=None)
    'modelbuilder compute create gpu-1 --size SIZE'
"""

from __future__ import annotations

import shlex

PROGRAM = "modelbuilder"

#: Every distinct command line (without the program name) built by :func:`command` in this process, for the
#: tests that parse them with the CLI.
BUILT: list[list[str]] = []

#: Recording stops after this many distinct command lines, so a long-lived process (the portal) that keeps
#: building hints with new run ids does not grow without bound. The test suite stays far below it.
MAX_RECORDED = 10_000

_recorded: set[tuple[str, ...]] = set()


def _quote(word: str) -> str:
    # Placeholders such as SIZE or RUN_ID stay readable; anything with spaces or shell syntax is quoted.
    return shlex.quote(word) if word else "''"


def _record(argv: list[str]) -> None:
    key = tuple(argv)
    if key in _recorded or len(_recorded) >= MAX_RECORDED:
        return
    _recorded.add(key)
    BUILT.append(argv)


def command(*words: str, **options: str | int | bool | None) -> str:
    """A ``modelbuilder`` command line: positional words, then ``--option value`` pairs in the given order.

    ``None`` and ``False`` options are left out; ``True`` gives a bare flag. Underscores in option names
    become hyphens (``output_dir="x"`` → ``--output-dir x``). Spell the command words and option names
    literally at the call site: the tests read them from the source to check them against the CLI.
    """
    argv: list[str] = [str(word) for word in words]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        argv.append(flag)
        if value is not True:
            argv.append(str(value))
    _record(argv)
    return " ".join([PROGRAM, *(_quote(word) for word in argv)])


def short_id(run_id: str) -> str:
    """The run-id prefix that hints show (every command that takes a run id accepts a unique prefix)."""
    return run_id[:12]
