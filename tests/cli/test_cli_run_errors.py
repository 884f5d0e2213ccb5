"""A run that fails on purpose (bad images with --on-bad-image fail) tells its error once, on every channel.

Real worker processes and the real trainer (its data scan fails before any training), not the fake one.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from cli_runner import Cli

import modelbuilder
from factories import make_image_folder, write_truncated
from modelbuilder.errors import DatasetError
from modelbuilder.services import open_workspace
from modelbuilder.store import lifecycle

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="needs torch (the real trainer)"
)

MESSAGE = re.compile(r"Data folder '.*' has 2 bad files and on_bad_image is 'fail'")


def _bad_data(root: Path) -> Path:
    data = make_image_folder(root, classes=2, per_class=4, size=16)
    (data / "label0" / "notes.png").write_bytes(b"this is not an image at all\n" * 8)
    write_truncated(data / "label1" / "cut.png")
    return data


def _run_id(output: str) -> str:
    found = re.findall(r"\b[0-9a-f]{32}\b", output)
    assert found, output
    return found[0]


@needs_torch
def test_bad_images_with_fail_report_the_error_once_everywhere(cli: Cli, tmp_path: Path) -> None:
    data = _bad_data(tmp_path / "bad")
    result = cli(
        "train", data, "--architecture", "test_tiny", "--time", "8s", "--on-bad-image", "fail", "--no-portal"
    )
    assert result.exit_code == 1
    console = result.stdout + result.stderr
    assert "Traceback" not in console, console
    assert len(MESSAGE.findall(console)) == 1, console
    assert result.stderr.count("Error: ") == 1 and result.stderr.count("Hint: ") == 1, console
    assert "--on-bad-image skip" in result.stderr.split("Hint: ", 1)[1]
    run_id = _run_id(console)

    shown = json.loads(cli("run", "show", run_id, "--json").stdout)
    assert shown["status"] == "Failed" and shown["error_type"] == "DatasetError"
    assert MESSAGE.match(shown["error"]) and "--on-bad-image skip" in shown["error_hint"]
    assert "Hint:" not in shown["error"]
    text = cli("run", "show", run_id).stdout
    assert len(MESSAGE.findall(text)) == 1 and text.count("--on-bad-image skip") == 1

    logs = cli("run", "logs", run_id).stdout
    assert "Traceback" not in logs and len(MESSAGE.findall(logs)) == 1, logs
    assert re.search(r"^Error: Data folder", logs, re.M) and re.search(r"^Hint: Fix or remove", logs, re.M)


@needs_torch
def test_the_traceback_goes_to_the_debug_log_and_to_the_console_with_debug(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELBUILDER_DEBUG", "1")
    data = _bad_data(tmp_path / "bad")
    result = cli(
        "train", data, "--architecture", "test_tiny", "--time", "8s", "--on-bad-image", "fail", "--no-portal"
    )
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "scan.py" in result.stderr  # where the worker raised it
    assert "Traceback" not in cli("run", "logs", _run_id(result.stdout + result.stderr)).stdout


@needs_torch
def test_the_python_api_raises_the_workers_error_class(tmp_path: Path) -> None:
    data = _bad_data(tmp_path / "bad")
    with pytest.raises(DatasetError) as info:
        modelbuilder.train(data, architecture="test_tiny", time="8s", on_bad_image="fail")
    assert type(info.value) is DatasetError
    assert MESSAGE.match(info.value.message) and "--on-bad-image skip" in (info.value.hint or "")


def test_run_show_says_failed_process_lost(cli: Cli) -> None:
    with open_workspace(None) as session:
        experiment = session.store.get_or_create_experiment("lost-exp")
        run = session.store.create_run(experiment.id, compute="local")
        lifecycle.queue(session.store, run.id)
        lifecycle.start(session.store, run.id)
        lifecycle.mark_lost(session.store, run.id, "worker pid 1 on host-a is gone")
    shown = cli("run", "show", run.id).stdout
    assert re.search(r"^status\s+Failed \(process lost\)$", shown, re.M), shown
    assert re.search(
        r"^hint\s+Continue it from its last checkpoint: modelbuilder train --resume", shown, re.M
    )
