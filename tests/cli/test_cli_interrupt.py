"""Ctrl-C in ``modelbuilder train`` (a real terminal process): cancel, keep output going, second Ctrl-C
kills; and ``modelbuilder run cancel`` from another terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import Cli

from fake_trainer import OPTIONS_ENV, TARGET, TESTS_DIR
from modelbuilder.entities import RunStatus
from modelbuilder.services import open_workspace

pytestmark = pytest.mark.usefixtures("use_fake_trainer")

#: ``modelbuilder`` with the fake trainer as its default target.
DRIVER = (
    "import sys\n"
    f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
    "from modelbuilder.services import training_run\n"
    f"training_run.DEFAULT_TRAINING_TARGET = {TARGET!r}\n"
    "from modelbuilder.cli import main\n"
    "main()\n"
)
LONG = json.dumps({"trials": 3, "epochs": 2000, "epoch_seconds": 0.02})


def _start_train(data: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, OPTIONS_ENV: LONG}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, "train", str(data), "--no-portal", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_until_training(timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    with open_workspace() as session:
        while time.monotonic() < deadline:
            for run in session.store.list_runs(parent_run_id=None):
                if session.store.list_child_runs(run.id):
                    return run.id
            time.sleep(0.05)
    raise AssertionError("training did not start")


def _status(run_id: str) -> RunStatus:
    with open_workspace() as session:
        return session.store.get_run(run_id).status


def test_ctrl_c_cancels_and_keeps_the_partial_result(data: Path) -> None:
    process = _start_train(data)
    run_id = _wait_until_training()
    process.send_signal(signal.SIGINT)
    pressed = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - pressed < 15
    assert process.returncode == 130, stderr
    assert "Cancel requested" in stderr and "Status: Canceled" in stderr
    assert f"Run {run_id}: Canceled (partial result: the best model so far)" in stdout
    assert _status(run_id) is RunStatus.CANCELED
    with open_workspace() as session:
        assert "MLModel.zip" in {a.path for a in session.store.list_artifacts(run_id)}


def test_a_second_ctrl_c_kills_the_worker(data: Path) -> None:
    process = _start_train(data)
    run_id = _wait_until_training()
    with open_workspace() as session:
        worker = json.loads(session.run_folders(run_id).worker_path.read_text())["pid"]
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Killed the worker" in stderr
    assert _status(run_id) is RunStatus.CANCELED
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_run_cancel_from_another_terminal(cli: Cli, data: Path) -> None:
    process = _start_train(data)
    run_id = _wait_until_training()
    result = cli("run", "cancel", run_id)
    assert result.exit_code == 0
    assert (
        f"Run {run_id}: CancelRequested." in result.stderr
        and f"Run {run_id} ended Canceled." in result.stderr
    )
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr  # canceled, but not by this terminal's Ctrl-C
    assert "Canceled (partial result" in stdout
