"""``modelbuilder predict`` on an exported model, and ``modelbuilder portal``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from cli_runner import Cli
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from onnx_factory import LABELS, PURE, SPEC, make_classifier  # noqa: E402


@pytest.fixture
def model(tmp_path: Path) -> Path:
    pytest.importorskip("onnx")
    from modelbuilder.pipeline import write_bundle

    onnx_path = make_classifier(tmp_path / "bestModel.onnx")
    return write_bundle(tmp_path / "MLModel.zip", onnx_path, LABELS, SPEC, metadata={"backbone": "tiny"})


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for label in ("green", "red"):
        path = tmp_path / f"{label}.png"
        Image.new("RGB", (40, 40), PURE[label]).save(path)
        paths.append(path)
    return paths


def test_predict_prints_one_line_per_image(cli: Cli, model: Path, images: list[Path]) -> None:
    result = cli("predict", model, *images)
    assert result.exit_code == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(row[0], row[1]) for row in rows] == [(str(images[0]), "green"), (str(images[1]), "red")]
    assert all(0.5 < float(row[2]) <= 1.0 for row in rows)


def test_predict_json_and_bad_images(cli: Cli, model: Path, images: list[Path], tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    result = cli("predict", model, images[1], tmp_path / "notes.png", "--json")
    assert result.exit_code == 1
    good, bad = json.loads(result.stdout)
    assert good["prediction"] == "red" and set(good["scores"]) == set(LABELS)
    assert good["score"] == max(good["scores"].values())
    assert bad["image"].endswith("notes.png") and bad["error"]
    assert "Error: " in result.stderr


def test_predict_on_a_missing_model(cli: Cli, images: list[Path], tmp_path: Path) -> None:
    result = cli("predict", tmp_path / "missing.zip", images[0])
    assert result.exit_code == 1 and result.stderr.startswith("Error: ")


def test_portal_without_the_extra_names_the_install_command(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    result = cli("portal")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == 'Hint: Install them with: pip install "modelbuilder[portal]"'


def test_portal_serves_the_resolved_workspace(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, str, int]] = []
    module = type(sys)("modelbuilder.portal.server")
    module.serve = lambda workspace_name, host, port: served.append((workspace_name, host, port))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelbuilder.portal.server", module)
    result = cli("portal", "--port", "9001")
    assert result.exit_code == 0, result.stderr
    assert served == [("default", "127.0.0.1", 9001)]
