"""The generated <Name>.WebApi as a user runs it: a fresh venv from its requirements (PyPI), no torch.

Slow (about a minute, most of it pip): the venv is built once per test session.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_image, save_image_bytes
from modelbuilder.pipeline import load_model

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

PIP_OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
TORCH_STACK = ("torch", "torchvision", "timm", "onnx", "modelbuilder")


def venv_env() -> dict[str, str]:
    """The environment without this venv's Python settings (PYTHONPATH & co. would leak modules in)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="session")
def downloaded_web_api(generated: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the generated Web API folder, as a user gets it from a run's outputs."""
    return Path(
        shutil.copytree(generated["web_api"], tmp_path_factory.mktemp("user") / "Colour-Kinds.WebApi")
    )


@pytest.fixture(scope="session")
def webapi_python(downloaded_web_api: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only the Web API's requirements (and its tests'), installed from PyPI."""
    venv = tmp_path_factory.mktemp("webapi-venv") / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=venv_env(), timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", "requirements-test.txt"],
        cwd=downloaded_web_api,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0 and any(sign in install.stderr for sign in PIP_OFFLINE_SIGNS):
        pytest.skip(f"PyPI is not reachable from this machine: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stdout + install.stderr
    print(f"Web API venv built in {time.monotonic() - started:.1f} s")  # shown with -s: the slow part
    return python


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(webapi_python: Path, downloaded_web_api: Path, tmp_path: Path) -> Iterator[str]:
    """``python main.py --host 127.0.0.1 --port <free>`` in the venv, up and healthy; stopped afterwards."""
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w", encoding="utf-8") as output:
        process = subprocess.Popen(
            [str(webapi_python), "main.py", "--host", "127.0.0.1", "--port", str(port)],
            cwd=downloaded_web_api,
            env=venv_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the Web API exited early:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the Web API did not answer /health:\n{log.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl+C: uvicorn shuts down gracefully, main.py exits 0
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    assert process.returncode == 0, log.read_text()


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
