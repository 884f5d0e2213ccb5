"""The generated console app and model package, run the way a user would: torch & modelbuilder absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from factories import load_test_module
from modelbuilder.pipeline import load_model

run_python = load_test_module("codegen/runner.py", "codegen_runner").run_python


def score_lines(stdout: str) -> list[tuple[str, float]]:
    lines = stdout.split("Scores:\n", 1)[1].strip().splitlines()
    return [(line.split()[0], float(line.split()[1])) for line in lines]


def test_blockers_really_block(blockers: Path, tmp_path: Path) -> None:
    result = run_python(["-c", "import modelbuilder"], blockers, tmp_path)
    assert result.returncode != 0 and "must not import modelbuilder" in result.stderr
    result = run_python(["-c", "import torch"], blockers, tmp_path)
    assert result.returncode != 0 and "must not import torch" in result.stderr


def test_console_app_predicts_a_red_image(
    generated: dict[str, Path], colour_images: dict[str, Path], blockers: Path, tmp_path: Path
) -> None:
    main = generated["console_app"] / "main.py"
    result = run_python([str(main), str(colour_images["red"])], blockers, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Image: {colour_images['red']}" in result.stdout
    assert "Predicted label: red\n" in result.stdout
    scores = score_lines(result.stdout)
    assert scores[0][0] == "red" and scores[0][1] > 0.99
    assert sorted(label for label, _ in scores) == ["blue", "green", "red"]
    assert [score for _, score in scores] == sorted((score for _, score in scores), reverse=True)
    assert sum(score for _, score in scores) == pytest.approx(1.0, abs=1e-3)


def test_console_app_without_arguments_predicts_the_sample(
    generated: dict[str, Path], blockers: Path, tmp_path: Path
) -> None:
    result = run_python([str(generated["console_app"] / "main.py")], blockers, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Image: {generated['console_app'] / 'sample.jpg'}" in result.stdout
    assert "Predicted label: green\n" in result.stdout


def test_model_package_matches_the_prediction_engine(
    generated: dict[str, Path], colour_images: dict[str, Path], blockers: Path, tmp_path: Path, bundle: Path
) -> None:
    script = f"""
import io, json, sys
sys.path.insert(0, {str(generated["model_project"])!r})
from PIL import Image
import numpy as np
from colour_kinds_model import ModelInput, ModelOutput, labels, predict, predict_all, preprocessing
from colour_kinds_model.preprocess import ImageDecodeError
red, green, blue = {[str(colour_images[label]) for label in ("red", "green", "blue")]!r}
with open(green, "rb") as handle:
    green_bytes = handle.read()
inputs = [ModelInput(red, label="red"), ModelInput(green_bytes), Image.open(blue)]
inputs.append(np.asarray(Image.open(red)))
outputs = predict_all(inputs, batch_size=3)
assert all(isinstance(out, ModelOutput) for out in outputs)
assert predict(ModelInput(blue)) == outputs[2]
try:
    predict(ModelInput(io.BytesIO(b"x").getvalue()))
except ImageDecodeError as exc:
    error = str(exc)
banned = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "modelbuilder", "timm"))
print(json.dumps({{"labels": labels(), "crop": preprocessing().crop_size, "error": error, "banned": banned,
                  "outputs": [[out.prediction, out.score] for out in outputs]}}))
"""
    result = run_python(["-c", script], blockers, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["labels"] == ["red", "green", "blue"] and data["crop"] == 32
    assert "not a readable image" in data["error"]
    assert data["banned"] == []
    assert [prediction for prediction, _ in data["outputs"]] == ["red", "green", "blue", "red"]
    engine = load_model(bundle)
    expected = engine.predict_batch([colour_images["red"], colour_images["green"], colour_images["blue"]])
    for (_, score), reference in zip(data["outputs"], expected, strict=False):
        assert score == pytest.approx(reference.score, abs=1e-6)


def test_console_app_reports_bad_images_and_damaged_models(
    generated: dict[str, Path], colour_images: dict[str, Path], blockers: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(generated["model_project"].parent, copy)
    main = copy / "Colour-Kinds.ConsoleApp" / "main.py"
    missing = tmp_path / "missing.png"
    result = run_python(
        [str(main), "--json", str(colour_images["blue"]), str(missing)], blockers, cwd=tmp_path
    )
    assert result.returncode == 1
    assert json.loads(result.stdout.strip())["prediction"] == "blue"
    assert "missing.png" in result.stderr and "does not exist" in result.stderr
    model = copy / "Colour-Kinds.Model" / "colour_kinds_model" / "bestModel.onnx"
    model.write_bytes(model.read_bytes() + b"\x00")
    result = run_python([str(main), str(colour_images["blue"])], blockers, cwd=tmp_path)
    assert result.returncode == 2
    assert "does not match MLModel.zip" in result.stderr
