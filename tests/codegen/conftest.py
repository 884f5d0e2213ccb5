"""Fixtures for the code generator: a bundle of the tiny colour classifier and generated projects."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from factories import load_test_module
from modelbuilder.codegen import generate_code
from modelbuilder.pipeline import write_bundle

BLOCKED = ("torch", "torchvision", "timm", "onnx", "fastapi", "sqlalchemy", "ray", "modelbuilder")
# The Web API needs FastAPI (and its tests pytest); everything else stays blocked.
WEBAPI_BLOCKED = tuple(name for name in BLOCKED if name != "fastapi")


def _load_onnx_factory() -> ModuleType:
    return load_test_module("pipeline/onnx_factory.py", "codegen_onnx_factory")


onnx_factory = _load_onnx_factory()


@pytest.fixture(scope="session")
def colour_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for label, colour in onnx_factory.PURE.items():
        paths[label] = folder / f"{label}.png"
        Image.new("RGB", (48, 40), colour).save(paths[label])
    # A JPEG with a misleading extension: the sample's extension must come from its content.
    paths["sample"] = folder / "green_sample.dat"
    Image.new("RGB", (40, 40), onnx_factory.PURE["green"]).save(paths["sample"], "JPEG", quality=95)
    return paths


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    folder = tmp_path_factory.mktemp("bundle")
    onnx_path = onnx_factory.make_classifier(folder / "bestModel.onnx")
    return write_bundle(folder / "MLModel.zip", onnx_path, onnx_factory.LABELS, onnx_factory.SPEC)


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory, bundle: Path, colour_images: dict[str, Path]) -> dict:
    """Projects generated once per session for 'Colour-Kinds' (package colour_kinds_model); read-only."""
    output = tmp_path_factory.mktemp("generated")
    return generate_code(output, "Colour-Kinds", bundle, colour_images["sample"])


def _blocker_folder(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('generated code must not import {name}')\n", encoding="utf-8"
        )
    return folder


@pytest.fixture(scope="session")
def blockers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for PYTHONPATH in which torch, modelbuilder & co. fail to import."""
    return _blocker_folder(tmp_path_factory.mktemp("blockers"), BLOCKED)


@pytest.fixture(scope="session")
def torch_blockers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the torch stack blocked: for snippets that use modelbuilder's torch-free prediction."""
    return _blocker_folder(tmp_path_factory.mktemp("torch-blockers"), ("torch", "torchvision", "timm"))


@pytest.fixture(scope="session")
def webapi_blockers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``blockers``, but FastAPI may be imported (the Web API is built on it)."""
    return _blocker_folder(tmp_path_factory.mktemp("webapi-blockers"), WEBAPI_BLOCKED)
