"""The generated <Name>.WebApi: answers as PredictionEngine does, refuses what it must, runs torch-free."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from factories import load_test_module, make_image, save_image_bytes
from modelbuilder.codegen import generate_code
from modelbuilder.pipeline import PredictionEngine, load_model

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

run_python = load_test_module("codegen/runner.py", "codegen_runner").run_python

SCORE_TOLERANCE = 1e-5  # the bar: same label, every score within 1e-5 of PredictionEngine's


@pytest.fixture(scope="module")
def web_api(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Path:
    """A Web API of its own (imported in-process below, which writes __pycache__ into it)."""
    return generate_code(tmp_path_factory.mktemp("webapi"), "Web-Colours", bundle, None)["web_api"]


@pytest.fixture(scope="module")
def app_module(web_api: Path) -> Iterator[ModuleType]:
    """The generated app.py, imported as its main.py does: its folder first on sys.path."""
    sys.path.insert(0, str(web_api))
    try:
        spec = importlib.util.spec_from_file_location("web_colours_webapi_app", web_api / "app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(web_api))
    yield module
    for name in [name for name in sys.modules if name.split(".")[0] == "web_colours_model"]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def client(app_module: ModuleType) -> Iterator[TestClient]:
    with TestClient(app_module.create_app()) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def engine(bundle: Path) -> PredictionEngine:
    return load_model(bundle)


def varied_images() -> dict[str, bytes]:
    """Noisy images in several formats and modes, so the scores are not saturated at 0 and 1."""
    rgba = make_image(1, 2, 40).convert("RGBA")
    rgba.putalpha(128)
    return {
        "png": save_image_bytes(make_image(0, 1, 48), "PNG"),
        "jpeg-wide": save_image_bytes(make_image(1, 3, 64).resize((90, 50)), "JPEG", quality=90),
        "greyscale": save_image_bytes(make_image(2, 4, 40).convert("L"), "PNG"),
        "rgba": save_image_bytes(rgba, "PNG"),
        "bmp": save_image_bytes(make_image(2, 5, 36), "BMP"),
    }


def check_same_as_engine(body: dict, engine: PredictionEngine, image: bytes) -> None:
    expected = engine.predict(image)
    assert body["prediction"] == expected.prediction
    assert list(body["scores"]) == sorted(body["scores"], key=body["scores"].__getitem__, reverse=True)
    assert set(body["scores"]) == set(engine.labels)
    for label, score in zip(engine.labels, expected.score, strict=True):
        assert abs(body["scores"][label] - score) <= SCORE_TOLERANCE, (label, body["scores"][label], score)


@pytest.mark.parametrize("kind", sorted(varied_images()))
def test_predictions_match_the_prediction_engine(
    client: TestClient, engine: PredictionEngine, kind: str
) -> None:
    image = varied_images()[kind]
    multipart = client.post("/predict", files={"image": (f"photo.{kind}", image, "image/png")})
    raw = client.post("/predict", content=image, headers={"Content-Type": "application/octet-stream"})
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        check_same_as_engine(response.json(), engine, image)
    assert multipart.json() == raw.json()


def test_pure_colours_get_their_label(client: TestClient, colour_images: dict[str, Path]) -> None:
    for label in ("red", "green", "blue"):
        response = client.post("/predict", content=colour_images[label].read_bytes())
        assert response.json()["prediction"] == label
        assert next(iter(response.json()["scores"])) == label


def test_health_names_the_model_and_its_labels(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "Web-Colours", "labels": ["red", "green", "blue"]}


@pytest.mark.parametrize(
    ("request_args", "kind"),
    [
        ({"content": b"just some text"}, "raw text"),
        ({"files": {"image": ("notes.txt", b"not an image at all", "text/plain")}}, "multipart text"),
        ({"content": save_image_bytes(make_image(0, 0, 64), "PNG")[:200]}, "truncated PNG"),
    ],
    ids=["raw-text", "multipart-text", "truncated-png"],
)
def test_a_non_image_gets_415_with_a_json_message(client: TestClient, request_args: dict, kind: str) -> None:
    response = client.post("/predict", **request_args)
    assert response.status_code == 415, kind
    detail = response.json()["detail"]
    assert detail.startswith("The content is not a readable image") and "JPEG, PNG" in detail
    assert "BytesIO" not in detail and "<bytes>" not in detail


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"content": b""}, "holds no image"),
        ({"files": {"photo": ("photo.png", b"x", "image/png")}}, "has no field 'image'"),
        (
            {"data": {"image": "a text value"}, "files": {"other": ("o.png", b"x", "image/png")}},
            "file upload",
        ),
        ({"content": b"x", "headers": {"Content-Type": "multipart/form-data; boundary=zz"}}, "multipart"),
    ],
    ids=["empty-body", "no-image-field", "text-field", "broken-multipart"],
)
def test_a_request_without_an_image_gets_400(client: TestClient, request_args: dict, message: str) -> None:
    response = client.post("/predict", **request_args)
    assert response.status_code == 400
    assert message in response.json()["detail"].lower()


def test_oversize_requests_get_413_whether_declared_or_streamed(app_module: ModuleType) -> None:
    image = varied_images()["png"]
    limit = len(image) + 100  # room for the raw image, not for the same image in a multipart body

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        for _ in range(0, 3 * limit, 1000):
            yield b"\0" * 1000

    with TestClient(app_module.create_app(max_request_bytes=limit)) as small:
        at_limit = small.post("/predict", content=image + b"\0" * 100)
        raw = small.post("/predict", content=image)
        declared = small.post("/predict", content=image + b"\0" * 101)
        streamed = small.post("/predict", content=chunked())
        multipart = small.post("/predict", files={"image": ("p.png", image + b"\0" * 60, "image/png")})
    assert raw.status_code == 200 and at_limit.status_code == 200  # PNG ignores trailing bytes
    for response in (declared, streamed, multipart):
        assert response.status_code == 413
        assert f"limit of {limit} bytes" in response.json()["detail"]
        assert "--max-request-bytes" in response.json()["detail"]


def test_the_default_limit_is_10_mib(app_module: ModuleType, client: TestClient) -> None:
    assert app_module.DEFAULT_MAX_REQUEST_BYTES == 10 * 1024 * 1024
    response = client.post("/predict", content=b"\0" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413


def test_create_app_rejects_a_limit_below_one(app_module: ModuleType) -> None:
    with pytest.raises(ValueError, match="max_request_bytes must be >= 1"):
        app_module.create_app(max_request_bytes=0)


def test_openapi_documents_the_upload(client: TestClient) -> None:
    post = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    content = post["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["required"] == ["image"]
    assert "application/octet-stream" in content
    assert {"200", "400", "413", "415", "503"} <= set(post["responses"])
    assert client.get("/predict").status_code == 405


def test_generated_tests_pass_without_torch_or_modelbuilder(
    generated: dict[str, Path], webapi_blockers: Path, tmp_path: Path
) -> None:
    result = run_python(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(generated["web_api"])],
        webapi_blockers,
        cwd=generated["web_api"],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout


def test_main_refuses_a_damaged_model_before_listening(
    generated: dict[str, Path], webapi_blockers: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(generated["web_api"], tmp_path / "Colour-Kinds.WebApi")
    result = run_python([str(copy / "main.py"), "--max-request-bytes", "0"], webapi_blockers, cwd=tmp_path)
    assert result.returncode == 2 and "--max-request-bytes must be >= 1" in result.stderr
    model = copy / "colour_kinds_model" / "bestModel.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    result = run_python([str(copy / "main.py"), "--port", "0"], webapi_blockers, cwd=tmp_path)
    assert result.returncode == 2
    assert "does not match MLModel.zip" in result.stderr


def test_a_damaged_model_answers_503_with_the_reason(
    generated: dict[str, Path], webapi_blockers: Path, tmp_path: Path
) -> None:
    """Served without main.py (``uvicorn app:app``), a damaged model is reported on every request."""
    copy = shutil.copytree(generated["web_api"], tmp_path / "Colour-Kinds.WebApi")
    (copy / "colour_kinds_model" / "MLModel.zip").unlink()
    script = f"""
import json, sys
sys.path.insert(0, {str(copy)!r})
from fastapi.testclient import TestClient
from app import app
client = TestClient(app)
image = open({str(copy / "sample.jpg")!r}, "rb").read()
answers = [client.get("/health"), client.post("/predict", content=image)]
print(json.dumps([[answer.status_code, answer.json()["detail"]] for answer in answers]))
"""
    result = run_python(["-c", script], webapi_blockers, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for status, detail in json.loads(result.stdout):
        assert status == 503
        assert "model files are missing" in detail and "MLModel.zip" in detail
