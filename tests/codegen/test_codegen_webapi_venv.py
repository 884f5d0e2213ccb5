"""The generated <Name>.WebApi as a user runs it: a fresh venv from its requirements (PyPI), no torch.

Slow (about a minute, most of it pip): the venv is built once per test session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import load_test_module, make_image, save_image_bytes
from modelbuilder.codegen import Snippet, consume_snippets
from modelbuilder.pipeline import load_model

httpx = pytest.importorskip("httpx")
helpers = load_test_module("codegen/webapi_venv.py", "webapi_venv")
free_port, serving, venv_env = helpers.free_port, helpers.serving, helpers.venv_env
venv_shell_env, webapi_venv = helpers.venv_shell_env, helpers.webapi_venv

pytestmark = pytest.mark.slow

TORCH_STACK = ("torch", "torchvision", "timm", "onnx", "modelbuilder")
IMAGE = "my photo.jpg"


@pytest.fixture(scope="session")
def user_outputs(generated: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the generated projects plus an image, as a user has them in a run's outputs folder."""
    folder = Path(shutil.copytree(generated["web_api"].parent, tmp_path_factory.mktemp("user") / "out"))
    make_image(2, 9, 56).save(folder / IMAGE, "JPEG", quality=90)
    return folder


@pytest.fixture(scope="session")
def downloaded_web_api(user_outputs: Path) -> Path:
    return user_outputs / "Colour-Kinds.WebApi"


@pytest.fixture(scope="session")
def webapi_python(downloaded_web_api: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return webapi_venv(downloaded_web_api, tmp_path_factory.getbasetemp())


@pytest.fixture
def server(webapi_python: Path, downloaded_web_api: Path, tmp_path: Path) -> Iterator[str]:
    """``python main.py --host 127.0.0.1 --port <free>`` in the venv, up and healthy; stopped afterwards."""
    port = free_port()
    command = [str(webapi_python), "main.py", "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, downloaded_web_api, venv_env(), port, tmp_path / "server.log") as url:
        yield url


def test_the_venv_has_no_torch(webapi_python: Path) -> None:
    probe = f"import importlib.util as u; print(','.join(m for m in {TORCH_STACK!r} if u.find_spec(m)))"
    found = subprocess.run(
        [str(webapi_python), "-c", probe],
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert found.stdout.strip() == ""
    packages = subprocess.run(
        [str(webapi_python), "-m", "pip", "list", "--format=freeze"],
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.lower()
    assert "torch" not in packages and "onnxruntime==" in packages and "fastapi==" in packages


def test_the_generated_tests_pass_in_the_venv(webapi_python: Path, downloaded_web_api: Path) -> None:
    result = subprocess.run(
        [str(webapi_python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=downloaded_web_api,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout


def test_the_server_predicts_as_the_prediction_engine_does(server: str, bundle: Path) -> None:
    engine = load_model(bundle)
    images = [save_image_bytes(make_image(label, 7, 48), "PNG") for label in range(3)]
    images.append(save_image_bytes(make_image(1, 8, 64).resize((80, 50)), "JPEG", quality=90))
    for image in images:
        response = httpx.post(f"{server}/predict", files={"image": ("photo", image)}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        expected = engine.predict(image)
        assert body["prediction"] == expected.prediction
        for label, score in zip(engine.labels, expected.score, strict=True):
            assert abs(body["scores"][label] - score) <= 1e-5
        raw = httpx.post(f"{server}/predict", content=image, timeout=30)
        assert raw.json() == body
    refused = httpx.post(f"{server}/predict", content=b"not an image", timeout=30)
    assert refused.status_code == 415 and "not a readable image" in refused.json()["detail"]
    health = httpx.get(f"{server}/health", timeout=30).json()
    assert health == {"status": "ok", "model": "Colour-Kinds", "labels": ["red", "green", "blue"]}


def run_snippet(snippet: Snippet, python: Path, cwd: Path) -> str:
    """Run a snippet's setup and code as a user would, in a shell with the venv activated."""
    env = venv_shell_env(python)
    if snippet.setup:
        setup = subprocess.run(
            ["bash", "-euc", snippet.setup], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
    command = (
        ["python", "-c", snippet.code] if snippet.language == "python" else ["bash", "-euc", snippet.code]
    )
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_consume_snippets_work_in_a_torch_free_venv(
    webapi_python: Path, user_outputs: Path, bundle: Path, tmp_path: Path
) -> None:
    """Model package (pip install included), console app and Web API + curl, exactly as shown."""
    expected = load_model(bundle).predict(user_outputs / IMAGE)
    port = free_port()
    snippets = {item.key: item for item in consume_snippets("Colour-Kinds", image=IMAGE, port=port)}

    prediction, scores = run_snippet(snippets["model_package"], webapi_python, user_outputs).splitlines()
    assert prediction == expected.prediction
    assert json.loads(scores) == pytest.approx(expected.score, abs=1e-6)

    console = run_snippet(snippets["console_app"], webapi_python, user_outputs)
    assert f"Image: {IMAGE}\nPredicted label: {expected.prediction}\n" in console

    web_api = snippets["web_api"]
    command = ["bash", "-euc", web_api.code]
    with serving(command, user_outputs, venv_shell_env(webapi_python), port, tmp_path / "snippet.log"):
        body = json.loads(run_snippet(snippets["web_api_request"], webapi_python, user_outputs))
    assert body["prediction"] == expected.prediction
    for label, score in zip(["red", "green", "blue"], expected.score, strict=True):
        assert abs(body["scores"][label] - score) <= 1e-5
