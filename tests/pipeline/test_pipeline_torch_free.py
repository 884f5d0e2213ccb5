"""The prediction side never imports the training or server stacks (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("torch", "torchvision", "timm", "onnx", "fastapi", "sqlalchemy", "ray", "uvicorn")

SCRIPT = f"""
import sys
FORBIDDEN = {FORBIDDEN!r}

def loaded():
    return sorted(name for name in sys.modules if name.split(".")[0] in FORBIDDEN)

import modelbuilder.pipeline
assert not loaded(), ("after import", loaded())
engine = modelbuilder.pipeline.load_model(sys.argv[1])
output = engine.predict(sys.argv[2])
outputs = engine.predict_batch([sys.argv[2]] * 3, batch_size=2)
modelbuilder.pipeline.verify_bundle(sys.argv[1])
assert not loaded(), ("after predicting", loaded())
print(output.prediction, len(outputs))
"""


def test_pipeline_imports_and_predicts_without_torch(model_dir: Path, colour_images: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model_dir / "MLModel.zip"), str(colour_images["green"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["green", "3"]
