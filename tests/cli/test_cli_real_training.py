"""One real training run through the CLI: the test_tiny backbone in a worker process, then predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import Cli

from factories import make_image_folder

pytest.importorskip("torch")


def test_train_test_tiny_end_to_end_then_predict(cli: Cli, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "shapes", classes=3, per_class=12, size=32)
    out = tmp_path / "out"
    result = cli("train", data, "--architecture", "test_tiny", "--time", "8s", "--output", out, "--no-portal")
    assert result.exit_code == 0, result.stderr
    run_id = next(line for line in result.stdout.splitlines() if line.startswith("Monitor")).rsplit("/", 1)[1]
    assert "Algorithm                 test_tiny + " in result.stdout
    assert {
        "bestModel.onnx",
        "bestModelMap.json",
        "MLModel.zip",
        "evaluation.json",
        "shapes.Model",
        "shapes.ConsoleApp",
    } <= {p.name for p in out.iterdir()}

    shown = json.loads(cli("run", "show", run_id, "--json").stdout)
    assert shown["status"] == "Completed" and shown["params"]["architecture"] == "test_tiny"
    assert shown["metrics"]["accuracy"] >= 0.5 and shown["children"]
    assert all(child["status"] in ("Completed", "Canceled") for child in shown["children"])
    artifacts = {a["path"] for a in shown["artifacts"]}
    assert {"shapes.Model.zip", "shapes.ConsoleApp.zip", "logs/run.log", "result.json"} <= artifacts

    image = data / "label2" / "label2_0.png"
    predicted = cli("predict", out / "MLModel.zip", image)
    assert predicted.exit_code == 0, predicted.stderr
    path, label, score = predicted.stdout.strip().split("\t")
    assert path == str(image) and label in ("label0", "label1", "label2") and 0 < float(score) <= 1
