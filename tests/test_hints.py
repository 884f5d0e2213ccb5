"""Every command that an error hint suggests parses under the real ``modelbuilder`` CLI.

Four checks, because a hint can go wrong in four ways:

- a call of ``hints.command`` spells a command, an argument or an option the CLI does not have: every call
  site in the source is read with ``ast`` and its shape (literal words, option names, a typed sample value
  where the call passes a variable) is parsed by the Typer app;
- a command line built while the tests run does not parse: the built ones are recorded in ``hints.BUILT`` and
  parsed here (and at the end of the test session, by ``tests/conftest.py``);
- a hint spells a command by hand instead of building it: string literals below ``src/modelbuilder`` (outside
  ``cli/``) must not contain ``modelbuilder <command>``;
- a page of the portal shows a command (``<code>modelbuilder ...</code>`` in a template) the CLI refuses.
"""

from __future__ import annotations

import ast
import enum
import re
import shlex
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

import modelbuilder
from modelbuilder import hints
from modelbuilder.cli.app import app
from modelbuilder.entities import RunStatus
from modelbuilder.errors import InvalidStateError
from modelbuilder.services import open_workspace
from modelbuilder.services.training_run import resume_training
from modelbuilder.store import lifecycle

ROOT_COMMAND: Any = typer.main.get_command(app)
SOURCE_ROOT = Path(modelbuilder.__file__).resolve().parent
#: What a call passes as a variable (a run id, a name) becomes this, or a typed sample for typed parameters.
PLACEHOLDER = "VALUE"


# ------------------------------------------------------------------ parsing a command line with the real CLI


def _resolve(argv: Sequence[str]) -> tuple[Any, list[str], list[str]] | str:
    """The leaf command that ``argv`` names, the words that named it and the rest; or why there is none."""
    command: Any = ROOT_COMMAND
    path: list[str] = []
    rest = list(argv)
    while isinstance(command, TyperGroup):
        if not rest:
            return f"'{' '.join([hints.PROGRAM, *path])}' is a group of commands, not a command"
        word = rest.pop(0)
        sub = command.commands.get(word)
        if sub is None:
            known = ", ".join(sorted(command.commands))
            return f"'{' '.join([hints.PROGRAM, *path])}' has no command {word!r} (it has: {known})"
        command = sub
        path.append(word)
    return command, path, rest


def parse_problem(argv: Sequence[str]) -> str | None:
    """Why the CLI would refuse ``modelbuilder ARGV``; None when it parses."""
    resolved = _resolve(argv)
    if isinstance(resolved, str):
        return resolved
    command, path, rest = resolved
    try:
        with command.make_context(" ".join([hints.PROGRAM, *path]), rest, resilient_parsing=False):
            return None
    except typer.TyperException as exc:
        return f"{' '.join(argv)}: {exc}"


def test_parse_problem_accepts_real_commands() -> None:
    for argv in (
        ["run", "download", "RUN_ID", "--output", "DIR"],
        ["compute", "create", "NEW-NAME", "--size", "SIZE", "--workspace", "team"],
        ["train", "--resume", "3f2a9c1b"],
        ["compute", "sizes"],
        ["portal", "--port", "8001"],
    ):
        assert parse_problem(argv) is None, argv


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "download", "RUN_ID", "DIR"], "unexpected extra argument"),
        (["compute", "create", "gpu-1"], "size"),
        (["run", "show", "RUN_ID", "--no-such-option"], "--no-such-option"),
        (["run", "frobnicate"], "no command 'frobnicate'"),
        (["run"], "group of commands"),
        (["portal", "--port", "not-a-port"], "integer"),
    ],
)
def test_parse_problem_refuses_wrong_commands(argv: list[str], expected: str) -> None:
    problem = parse_problem(argv)
    assert problem is not None and expected.lower() in problem.lower(), problem


# ------------------------------------------------------------------ hints.command itself


def test_command_spells_words_then_options_in_order() -> None:
    text = hints.command("compute", "create", "gpu-1", size="SIZE", min_nodes=0, workspace=None, json=False)
    assert text == "modelbuilder compute create gpu-1 --size SIZE --min-nodes 0"
    assert hints.command("run", "cancel", "abc", wait=True) == "modelbuilder run cancel abc --wait"


def test_command_quotes_words_a_shell_would_split() -> None:
    assert hints.command("train", "my images", output="") == "modelbuilder train 'my images' --output ''"


def test_command_records_each_distinct_command_line_once() -> None:
    argv = ["run", "show", "a-run-only-this-test-builds"]
    hints.command(*argv)
    hints.command(*argv)
    assert hints.BUILT.count(argv) == 1


def test_short_id_is_the_prefix_run_commands_accept() -> None:
    assert hints.short_id("0123456789abcdef0123") == "0123456789ab"


# ------------------------------------------------------------------ every call site of hints.command


@dataclass(frozen=True)
class CallSite:
    where: str
    call: ast.Call


def _command_call_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to the ``hints`` module and to ``hints.command`` by this module's imports."""
    modules: set[str] = set()
    functions: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            from_hints = (node.module or "").split(".")[-1] == "hints"
            for alias in node.names:
                if from_hints and alias.name == "command":
                    functions.add(alias.asname or alias.name)
                elif not from_hints and alias.name == "hints":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "modelbuilder.hints" and alias.asname:
                    modules.add(alias.asname)
    return modules, functions


def command_calls(source: str) -> Iterator[ast.Call]:
    """The calls of ``hints.command`` in one module's source."""
    tree = ast.parse(source)
    modules, functions = _command_call_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in functions:
            yield node
        elif (
            isinstance(func, ast.Attribute)
            and func.attr == "command"
            and isinstance(func.value, ast.Name)
            and func.value.id in modules
        ):
            yield node


def _source_files() -> list[Path]:
    return sorted(path for path in SOURCE_ROOT.rglob("*.py") if path.name != "hints.py")


def hint_call_sites() -> list[CallSite]:
    sites = []
    for path in _source_files():
        for call in command_calls(path.read_text(encoding="utf-8")):
            sites.append(CallSite(f"{path.relative_to(SOURCE_ROOT)}:{call.lineno}", call))
    return sites


def _sample_value(param: Any) -> str:
    """A value the parameter's type accepts, for a call that passes a variable."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", str)
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return str(next(iter(candidate)).value)
        if candidate in (int, float):
            minimum = getattr(param, "min", None)
            return str(minimum if minimum is not None else 1)
        if typing.get_origin(candidate) is typing.Literal:
            return str(typing.get_args(candidate)[0])
    return PLACEHOLDER


def _literal(node: ast.expr) -> tuple[bool, object]:
    if isinstance(node, ast.Constant):
        return True, node.value
    return False, None


def call_shape(call: ast.Call) -> list[str] | str:
    """The command line a call builds, with typed samples for its variables; or why it cannot be checked."""
    words: list[str] = []
    for arg in call.args:
        if isinstance(arg, ast.Starred):
            return "pass the command words one by one (not *words), so this test can read them"
        is_literal, value = _literal(arg)
        words.append(str(value) if is_literal else "")
    # The words that name the command must be literal: a variable there cannot be checked.
    command: Any = ROOT_COMMAND
    depth = 0
    while isinstance(command, TyperGroup):
        if depth >= len(words) or not isinstance(call.args[depth], ast.Constant):
            return "spell the command words as string literals, so this test can read them"
        command = command.commands.get(words[depth])
        if command is None:
            return parse_problem(words[: depth + 1]) or "unknown command"
        depth += 1
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    argv = words[:depth]
    for index, (arg, word) in enumerate(zip(call.args[depth:], words[depth:], strict=True)):
        if isinstance(arg, ast.Constant):
            argv.append(word)
        else:
            argv.append(_sample_value(arguments[index]) if index < len(arguments) else PLACEHOLDER)
    for keyword in call.keywords:
        if keyword.arg is None:
            return "pass the options by name (not **options), so this test can read them"
        flag = "--" + keyword.arg.replace("_", "-")
        option = next((p for p in command.params if flag in p.opts), None)
        is_literal, value = _literal(keyword.value)
        if is_literal and (value is None or value is False):
            continue
        if (is_literal and value is True) or (option is not None and getattr(option, "is_flag", False)):
            argv.append(flag)
        elif is_literal:
            argv += [flag, str(value)]
        else:
            argv += [flag, _sample_value(option) if option is not None else PLACEHOLDER]
    return argv


def call_site_problem(call: ast.Call) -> str | None:
    shape = call_shape(call)
    return shape if isinstance(shape, str) else parse_problem(shape)


def _one_call(source: str) -> ast.Call:
    calls = list(command_calls(source))
    assert len(calls) == 1
    return calls[0]


def test_call_site_check_refuses_wrong_hints() -> None:
    header = "from modelbuilder import hints\n"
    wrong = {
        "hints.command('run', 'download', hints.short_id(run.id), out_dir)": "unexpected extra argument",
        "hints.command('run', 'download', run_id, folder=out_dir)": "--folder",
        "hints.command('compute', 'create', name)": "size",
        "hints.command('compute', 'remove', name)": "no command 'remove'",
        "hints.command(noun, 'delete', name)": "string literals",
        "hints.command('run', 'show', *ids)": "one by one",
        "hints.command('run', 'list', **options)": "by name",
    }
    for call, expected in wrong.items():
        problem = call_site_problem(_one_call(header + call))
        assert problem is not None and expected in problem, (call, problem)
    assert call_site_problem(_one_call("from ..hints import command as cmd\ncmd('compute', 'sizes')")) is None
    right = "hints.command('run', 'download', run_id, output='DIR', workspace=ws, json=as_json)"
    shape = call_shape(_one_call(header + right))
    assert shape == ["run", "download", PLACEHOLDER, "--output", "DIR", "--workspace", PLACEHOLDER, "--json"]


def test_hints_are_built_in_the_source() -> None:
    # Guards the scan below: if it stopped finding the calls (a renamed module, another import style), the
    # parse test would pass with nothing to check.
    assert len(hint_call_sites()) >= 10


@pytest.mark.parametrize("site", hint_call_sites(), ids=lambda site: site.where)
def test_every_hint_call_site_parses_under_the_cli(site: CallSite) -> None:
    problem = call_site_problem(site.call)
    assert problem is None, f"{site.where}: {problem}"


# ------------------------------------------------------------------ command lines built while the tests run


def unparsable_built_commands() -> list[str]:
    """The command lines built so far in this process that the CLI would refuse, each with its reason."""
    return [problem for argv in list(hints.BUILT) if (problem := parse_problem(argv)) is not None]


@pytest.mark.parametrize(
    ("args", "expected_hint"),
    [
        (["run", "show", "0123456789ab"], ["run", "list"]),
        (["run", "download", "0123456789ab", "--output", "out"], ["run", "list"]),
        (["experiment", "show", "no-such-experiment"], ["experiment", "list"]),
        (["compute", "show", "nope"], ["compute", "create", "nope", "--size", "SIZE"]),
        (["compute", "create", "gpu-9", "--size", "NoSuchSize"], ["compute", "sizes"]),
    ],
)
def test_error_hints_of_the_cli_parse(args: list[str], expected_hint: list[str]) -> None:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 1
    hint = next(line for line in result.stderr.splitlines() if line.startswith("Hint: "))
    assert " ".join([hints.PROGRAM, *expected_hint]) in hint, hint
    assert any(argv[: len(expected_hint)] == expected_hint for argv in hints.BUILT), "not built by hints"
    assert unparsable_built_commands() == []


def test_resuming_a_completed_run_points_to_run_download_with_output() -> None:
    # The hint once said "run download ID DIR"; the command takes the folder as --output.
    with open_workspace("default") as session:
        store = session.store
        run = store.create_run(store.get_or_create_experiment("hints").id)
        path = lifecycle.path_between(RunStatus.NOT_STARTED, RunStatus.COMPLETED)
        assert path is not None
        for status in path:
            store.set_run_status(run.id, status)
        with pytest.raises(InvalidStateError) as info:
            resume_training(session, run.id)
    expected = ["run", "download", hints.short_id(run.id), "--output", "DIR"]
    assert " ".join([hints.PROGRAM, *expected]) in (info.value.hint or "")
    assert expected in hints.BUILT and parse_problem(expected) is None


def test_every_command_built_so_far_parses() -> None:
    # Run as part of the whole suite, BUILT holds the hints of every error path the earlier tests took.
    assert unparsable_built_commands() == []


# ------------------------------------------------------------------ no hand-written commands outside cli/

#: Top-level commands of the CLI (read from the app, so a new command is covered without editing this test).
COMMAND_MENTION = re.compile(
    r"\b(?:modelbuilder|mb)\s+(?:" + "|".join(re.escape(name) for name in ROOT_COMMAND.commands) + r")\b"
)
#: Literals that name the product, not a command line.
PROSE = {
    "modelbuilder portal",  # the portal's page title
    "Port %d answers, but not as a modelbuilder portal",
}


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def hand_written_commands(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of each string literal (not a docstring) that spells ``modelbuilder <command>``."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(part) for part in node.values)
            text = "".join(
                str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
        else:
            continue
        if COMMAND_MENTION.search(text) and text not in PROSE:
            found.append((node.lineno, text))
    return found


def test_scan_finds_hand_written_commands() -> None:
    source = (
        '"""Docstrings may say: modelbuilder run list."""\n'
        "# so may comments: modelbuilder run list\n"
        'hint = f"Copy them out: modelbuilder run download {run_id} DIR"\n'
        'other = "List runs with: " "mb run list"\n'
        'fine = "this modelbuilder runs offline"\n'
    )
    assert [line for line, _ in hand_written_commands(source)] == [3, 4]


def test_no_hand_written_commands_outside_the_cli() -> None:
    found = [
        f"{path.relative_to(SOURCE_ROOT)}:{line}: {text!r}"
        for path in _source_files()
        if path.relative_to(SOURCE_ROOT).parts[0] != "cli"
        for line, text in hand_written_commands(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "build these hints with modelbuilder.hints.command(...):\n" + "\n".join(found)


# ------------------------------------------------------------------ commands in the portal's page templates

#: A command shown in a page: ``<code>modelbuilder ...</code>``; Jinja expressions stand for values.
TEMPLATE_COMMAND = re.compile(r"<code>\s*(?:modelbuilder|mb)\s+([^<]*?)\s*</code>")
JINJA_EXPRESSION = re.compile(r"\{\{.*?\}\}")


def template_commands(text: str) -> list[list[str]]:
    return [shlex.split(JINJA_EXPRESSION.sub(PLACEHOLDER, found)) for found in TEMPLATE_COMMAND.findall(text)]


def test_template_scan_reads_commands_and_their_values() -> None:
    html = "<p>Try <code>modelbuilder workspace create {{ name }}</code> or <code>mb run list</code>.</p>"
    assert template_commands(html) == [["workspace", "create", PLACEHOLDER], ["run", "list"]]


def test_commands_in_the_portal_pages_parse_under_the_cli() -> None:
    templates = sorted((SOURCE_ROOT / "portal" / "templates").glob("*.html"))
    found = {
        f"{path.name}: {' '.join(argv)}": parse_problem(argv)
        for path in templates
        for argv in template_commands(path.read_text(encoding="utf-8"))
    }
    assert len(found) >= 3, "the pages show commands; the scan found too few of them"
    assert {where: problem for where, problem in found.items() if problem is not None} == {}
