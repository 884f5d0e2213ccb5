"""The Consume snippets, run as written from a run's outputs folder (pip steps: see the slow venv test)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from factories import load_test_module, make_image
from modelbuilder.codegen import Snippet, consume_snippets
from modelbuilder.errors import InvalidParameterError
from modelbuilder.pipeline import ModelOutput, load_model

run_python = load_test_module("codegen/runner.py", "codegen_runner").run_python

IMAGE = "my photo.jpg"  # a space: the shell snippets must quote it


def snippet(key: str) -> Snippet:
    return next(item for item in consume_snippets("Colour-Kinds", image=IMAGE) if item.key == key)


@pytest.fixture(scope="module")
def outputs(generated: dict[str, Path], bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run's outputs folder as a user has it: MLModel.zip, the generated projects and an image."""
    folder = Path(shutil.copytree(generated["web_api"].parent, tmp_path_factory.mktemp("snippets") / "out"))
    shutil.copyfile(bundle, folder / "MLModel.zip")
    make_image(1, 11, 48).save(folder / IMAGE, "JPEG", quality=90)
    return folder


@pytest.fixture(scope="module")
def expected(outputs: Path, bundle: Path) -> ModelOutput:
    return load_model(bundle).predict(outputs / IMAGE)


def test_every_snippet_is_there_and_valid() -> None:
    snippets = consume_snippets("Colour-Kinds")
    assert [item.key for item in snippets] == [
        "python_api",
        "model_package",
        "console_app",
        "web_api",
        "web_api_request",
    ]
    for item in snippets:
        assert item.title and item.code.endswith("\n") and item.language in ("python", "bash")
        if item.language == "python":
            ast.parse(item.code)
    assert "python Colour-Kinds.WebApi/main.py --host 127.0.0.1 --port 8080" in snippets[3].code
    assert "curl -F image=@photo.jpg http://127.0.0.1:8080/predict" in snippets[4].code


def test_the_python_api_snippet(outputs: Path, expected: ModelOutput, torch_blockers: Path) -> None:
    result = run_python(["-c", snippet("python_api").code], torch_blockers, cwd=outputs)
    assert result.returncode == 0, result.stderr
    prediction, scores = result.stdout.splitlines()
    assert prediction == expected.prediction
    assert list(ast.literal_eval(scores).values()) == pytest.approx(expected.score, abs=1e-6)


def test_the_model_package_snippet(
    outputs: Path, expected: ModelOutput, blockers: Path, tmp_path: Path
) -> None:
    item = snippet("model_package")
    assert item.setup == "pip install ./Colour-Kinds.Model\n"
    # What the pip install gives, without touching this venv: the package importable, torch still blocked.
    site = tmp_path / "site"
    shutil.copytree(outputs / "Colour-Kinds.Model" / "colour_kinds_model", site / "colour_kinds_model")
    result = run_python(["-c", f"import sys; sys.path.append({str(site)!r})\n{item.code}"], blockers, outputs)
    assert result.returncode == 0, result.stderr
    prediction, scores = result.stdout.splitlines()
    assert prediction == expected.prediction
    assert json.loads(scores) == pytest.approx(expected.score, abs=1e-6)


def test_the_console_app_snippet(outputs: Path, expected: ModelOutput, blockers: Path) -> None:
    lines = snippet("console_app").code.splitlines()
    assert lines[0] == "pip install -r Colour-Kinds.ConsoleApp/requirements.txt"
    assert (outputs / "Colour-Kinds.ConsoleApp" / "requirements.txt").is_file()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(PYTHONPATH=str(blockers), PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` is this venv's
    result = subprocess.run(
        ["bash", "-euc", "\n".join(lines[1:])],
        cwd=outputs,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"Image: {IMAGE}\nPredicted label: {expected.prediction}\n" in result.stdout


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"image": ""}, "'image' parameter"),
        ({"image": "a\nb.jpg"}, "'image' parameter"),
        ({"port": 0}, "'port' parameter"),
        ({"port": 70000}, "'port' parameter"),
        ({"port": True}, "'port' parameter"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, parameter: str) -> None:
    with pytest.raises(InvalidParameterError, match=parameter) as info:
        consume_snippets("Colour-Kinds", **kwargs)
    assert info.value.hint


def test_a_bad_name_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="'name' parameter"):
        consume_snippets("../evil")
