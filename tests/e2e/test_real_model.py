"""End to end with the real pretrained EfficientNet-Lite0 on the shipped Fashion-MNIST sample.

Trains once per session (a short budget), then checks what a user gets: parity between the evaluation
recorded at training time and the shipped ONNX pipeline, and the generated console app run in a
process where torch cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from modelbuilder.pipeline import load_model  # noqa: E402
from modelbuilder.training.config import TrainingConfig  # noqa: E402
from modelbuilder.training.reporter import RecordingReporter  # noqa: E402
from modelbuilder.training.trainer import run_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "fashion-mnist-mini"
TEST_IMAGES = ROOT / "samples" / "test-images"
BLOCKED = ("torch", "torchvision", "timm", "onnx", "modelbuilder")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lite0-out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELBUILDER_HOME", str(tmp_path_factory.mktemp("home")))
        patch.setenv("MODELBUILDER_OFFLINE", "1")
        config = TrainingConfig(data=str(SAMPLE), time_budget=30, name="Fashion",
                                strategies=("linear", "partial_finetune"))
        result = run_training(config, RecordingReporter(), out)
    assert result.backbone == "efficientnet_lite0"
    assert result.accuracy > 0.5  # 10 labels: chance is 0.1
    return out


def test_shipped_pipeline_reproduces_the_validation_predictions(trained: Path) -> None:
    evaluation = json.loads((trained / "evaluation.json").read_text())
    engine = load_model(trained / "MLModel.zip")
    assert engine.preprocessing.mean[0] * 255 == pytest.approx(127)  # Lite0's (x - 127) / 128
    items = evaluation["validation_items"]
    outputs = engine.predict_batch([item["path"] for item in items])
    for item, output in zip(items, outputs, strict=True):
        assert output.prediction == item["predicted_label"], item["path"]
        assert max(output.score) == pytest.approx(item["score"], abs=5e-4)  # torch vs onnxruntime float32


def test_console_app_runs_without_torch_on_a_real_image(trained: Path, tmp_path: Path) -> None:
    for name in BLOCKED:
        (tmp_path / "blockers" / name).mkdir(parents=True)
        (tmp_path / "blockers" / name / "__init__.py").write_text(f"raise ImportError('no {name} here')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(tmp_path / "blockers")
    image = TEST_IMAGES / "Trouser.png"
    result = subprocess.run([sys.executable, "main.py", str(image)], cwd=trained / "Fashion.ConsoleApp",
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    labels = json.loads((trained / "bestModelMap.json").read_text())
    expected = load_model(trained / "MLModel.zip").predict(image).prediction
    assert expected in result.stdout.split("Scores:")[0]
    assert all(label in result.stdout for label in labels)
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0  # the blockers really block
