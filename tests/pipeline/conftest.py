"""Fixtures for the prediction-side tests: a tiny ONNX colour classifier, its bundle and images."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_factory import LABELS, PURE, SPEC, make_classifier
from PIL import Image

from modelbuilder.pipeline import write_bundle


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bestModel.onnx (without metadata) + MLModel.zip, written once per session; treat as read-only."""
    pytest.importorskip("onnx")
    folder = tmp_path_factory.mktemp("model")
    onnx_path = make_classifier(folder / "bestModel.onnx")
    metadata = {"backbone": "tiny", "accuracy": 1.0}
    write_bundle(folder / "MLModel.zip", onnx_path, LABELS, SPEC, metadata=metadata)
    return folder


@pytest.fixture()
def bundle_path(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's MLModel.zip."""
    target = tmp_path / "MLModel.zip"
    target.write_bytes((model_dir / "MLModel.zip").read_bytes())
    return target


@pytest.fixture(scope="session")
def colour_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One pure-colour PNG per label, 40x48 so that resize and crop both do something."""
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for label in LABELS:
        paths[label] = folder / f"{label}.png"
        Image.new("RGB", (48, 40), PURE[label]).save(paths[label])
    return paths
