"""``modelbuilder train`` and ``modelbuilder run ...`` with the fake trainer (worker processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import Cli

from modelbuilder.cli import train as train_module

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


def _run_id(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("Monitor current run: "))
    return line.rsplit("/", 1)[1]


def test_train_prints_the_link_progress_and_summary_and_copies_outputs(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    result = cli("train", data, "--output", tmp_path / "out", "--time", "30s", "--no-portal")
    assert result.exit_code == 0, result.stderr
    run_id = _run_id(result.stdout)
    # --no-portal and no portal of this home running: no guessed link, but how to get one.
    assert (
        "Monitor current run: no portal is running; start one (modelbuilder portal --workspace default), "
        f"then open /workspaces/default/runs/{run_id}"
    ) in result.stdout
    summary = result.stdout.split(f"Run {run_id}: Completed", 1)[1]
    for label in (
        "Best validation accuracy  0.9000",
        "Macro accuracy",
        "Algorithm                 fake_net + fake",
        "Skipped images            1 (listed in evaluation.json)",
        "Outputs (workspace)",
    ):
        assert label in summary
    assert f"Outputs                   {(tmp_path / 'out').resolve()}" in summary
    assert "Status: Running" in result.stderr and "Trial trial-0: Completed val_accuracy" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "MLModel.zip",
        "bestModel.onnx",
        "bestModelMap.json",
        "evaluation.json",
        "flowers.ConsoleApp",
        "flowers.Model",
    ]
    shown = json.loads(cli("run", "show", run_id, "--json").stdout)
    assert shown["status"] == "Completed" and shown["params"]["time_budget"] == 30.0
    assert shown["experiment"] == "flowers" and shown["compute"] == "local"
    assert shown["metrics"]["accuracy"] == 0.9
    assert [c["name"] for c in shown["children"]] == ["trial-0", "trial-1", "trial-2"]
    assert all(c["parent_run_id"] == run_id for c in shown["children"])
    assert {"bestModel.onnx", "logs/run.log"} <= {a["path"] for a in shown["artifacts"]}


def test_experiments_group_runs_by_name(cli: Cli, data: Path) -> None:
    for experiment in ("same-exp", "same-exp", "other-exp"):
        result = cli("train", data, "--experiment", experiment, "--no-portal")
        assert result.exit_code == 0, result.stderr
    experiments = {e["name"]: e for e in json.loads(cli("experiment", "list", "--json").stdout)}
    assert {name: e["run_count"] for name, e in experiments.items()} == {"same-exp": 2, "other-exp": 1}
    assert experiments["same-exp"]["latest_run"]["status"] == "Completed"
    shown = json.loads(cli("experiment", "show", "same-exp", "--json").stdout)
    assert len(shown["runs"]) == 2 and {r["experiment"] for r in shown["runs"]} == {"same-exp"}
    assert "same-exp" in cli("experiment", "list").stdout

    runs = json.loads(cli("run", "list", "--json").stdout)
    assert len(runs) == 3 and all(r["parent_run_id"] is None for r in runs)
    with_trials = json.loads(cli("run", "list", "--all", "--experiment", "other-exp", "--json").stdout)
    assert len(with_trials) == 4
    completed = json.loads(cli("run", "list", "--status", "completed", "--json").stdout)
    assert len(completed) == 3
    table = cli("run", "list").stdout
    assert runs[0]["id"] in table and "accuracy=0.9000" in table
    bad = cli("run", "list", "--status", "Sleeping")
    assert bad.exit_code == 1 and "must be one of NotStarted" in bad.stderr


def test_run_logs_show_download_and_cancel(cli: Cli, data: Path, tmp_path: Path) -> None:
    run_id = _run_id(cli("train", data, "--no-portal").stdout)
    logs = cli("run", "logs", run_id).stdout.splitlines()
    assert logs[0].startswith(f"Run {run_id} started") and logs[-1].startswith("Run Completed")
    assert cli("run", "logs", run_id[:8], "--tail", "1").stdout.splitlines() == logs[-1:]
    followed = cli("run", "logs", run_id, "--follow")
    assert followed.stdout.splitlines() == logs and "ended Completed" in followed.stderr

    shown = cli("run", "show", run_id)
    assert "Completed" in shown.stdout and "trial-2" in shown.stdout and "bestModel.onnx" in shown.stdout

    downloaded = json.loads(cli("run", "download", run_id, "--output", tmp_path / "dl", "--json").stdout)
    assert Path(downloaded["flowers.Model"]).is_dir()
    assert (tmp_path / "dl" / "flowers.ConsoleApp" / "main.py").is_file()

    cancel = cli("run", "cancel", run_id)
    assert cancel.exit_code == 1
    assert cancel.stderr.splitlines() == [
        f"Error: Run '{run_id}' already ended (Completed); there is nothing to cancel.",
        f"Hint: See it with: modelbuilder run show {run_id[:12]}",
    ]
    missing = cli("run", "show", "abcdef123456")
    assert missing.exit_code == 1 and "Error: Run 'abcdef123456' not found" in missing.stderr


def test_cancel_a_queued_run_from_the_cli(cli: Cli) -> None:
    from modelbuilder.entities import RunStatus
    from modelbuilder.services import open_workspace

    with open_workspace() as session:
        experiment = session.store.get_or_create_experiment("waiting")
        run = session.store.create_run(experiment.id, compute="local")
        session.store.set_run_status(run.id, RunStatus.QUEUED)
    result = cli("run", "cancel", run.id, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == "Canceled"


def test_train_errors_are_one_line_and_a_hint(cli: Cli, data: Path, tmp_path: Path) -> None:
    missing = cli("train", tmp_path / "nothing", "--no-portal")
    assert missing.exit_code == 1
    assert missing.stderr.splitlines() == [
        f"Error: Data folder '{tmp_path / 'nothing'}' does not exist (looked for {tmp_path / 'nothing'}).",
        "Hint: Check the path for typos. Give a folder with one sub-folder per label (data/cat/1.jpg, "
        "data/dog/2.jpg, ...), or a CSV/TSV file with ImagePath,Label columns.",
    ]
    assert missing.stdout == ""
    no_data = cli("train", "--no-portal")
    assert no_data.exit_code == 1 and "needs the training data" in no_data.stderr
    bad_time = cli("train", data, "--time", "soon", "--no-portal")
    assert bad_time.exit_code == 1 and "Hint: Write a number followed by s, m or h" in bad_time.stderr
    bad_choice = cli("train", data, "--on-bad-image", "ignore", "--no-portal")
    assert bad_choice.exit_code == 1 and "'skip' or 'fail'" in bad_choice.stderr
    no_compute = cli("train", data, "--compute", "gpu-9", "--no-portal")
    assert no_compute.exit_code == 1 and "Compute 'gpu-9' not found" in no_compute.stderr


def test_a_failed_run_exits_1_with_the_run_error(
    cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER_OPTIONS", json.dumps({"fail": "dataset", "trials": 2}))
    result = cli("train", data, "--no-portal")
    assert result.exit_code == 1
    run_id = _run_id(result.stdout)
    assert f"Run {run_id} of experiment" in result.stderr  # which run failed is said first
    tail = result.stderr.strip().splitlines()[-2:]
    assert tail == ["Error: Label 'label0' has only 1 image; at least 2 are needed.", "Hint: Add images."]
    assert result.stderr.count("has only 1 image") == 1 and "Traceback" not in result.stderr


def test_resume_continues_a_failed_run(cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRAINER_OPTIONS", json.dumps({"fail": "crash", "trials": 3}))
    failed = cli("train", data, "--no-portal", "--experiment", "resumable")
    assert failed.exit_code == 1
    old = _run_id(failed.stdout)
    monkeypatch.setenv("FAKE_TRAINER_OPTIONS", json.dumps({"trials": 3}))
    elsewhere = cli("train", data.parent, "--resume", old, "--no-portal")
    assert elsewhere.exit_code == 1 and "--resume cannot switch it" in elsewhere.stderr
    resumed = cli("train", "--resume", old[:10], "--no-portal")
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resuming {old}" in resumed.stderr and "trial-0 finished before the resume" in resumed.stderr
    new = json.loads(cli("run", "show", _run_id(resumed.stdout), "--json").stdout)
    assert new["params"]["resumed_from"] == old and new["experiment"] == "resumable"
    again = cli("train", "--resume", new["id"], "--no-portal")
    assert again.exit_code == 1 and "only Failed or Canceled runs can be resumed" in again.stderr


def test_train_starts_the_portal_or_says_how(cli: Cli, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_portal(workspace: str) -> str | None:
        asked.append(workspace)
        return "http://127.0.0.1:9999" if len(asked) == 1 else None

    monkeypatch.setattr(train_module, "ensure_portal", fake_portal)
    first = cli("train", data, "--max-trials", "1")
    assert "Monitor current run: http://127.0.0.1:9999/workspaces/default/runs/" in first.stdout
    second = cli("train", data, "--workspace", "default")
    how = "Monitor current run: no portal is running; start one (modelbuilder portal --workspace default)"
    assert how in second.stdout
    assert "The portal could not be started" in second.stderr
    assert asked == ["default", "default"]
