"""generate_code: the files it writes, their content, name rules and atomic regeneration."""

from __future__ import annotations

import ast
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

import modelbuilder.pipeline.preprocess as preprocess_module
from modelbuilder.codegen import check_project_name, generate_code, package_name
from modelbuilder.errors import AlreadyExistsError, BundleError, ImageError, InvalidParameterError

EXPECTED_FILES = {
    "Colour-Kinds.Model/pyproject.toml",
    "Colour-Kinds.Model/README.md",
    "Colour-Kinds.Model/colour_kinds_model/__init__.py",
    "Colour-Kinds.Model/colour_kinds_model/model_input.py",
    "Colour-Kinds.Model/colour_kinds_model/model_output.py",
    "Colour-Kinds.Model/colour_kinds_model/consume_model.py",
    "Colour-Kinds.Model/colour_kinds_model/preprocess.py",
    "Colour-Kinds.Model/colour_kinds_model/bestModel.onnx",
    "Colour-Kinds.Model/colour_kinds_model/bestModelMap.json",
    "Colour-Kinds.Model/colour_kinds_model/MLModel.zip",
    "Colour-Kinds.ConsoleApp/main.py",
    "Colour-Kinds.ConsoleApp/requirements.txt",
    "Colour-Kinds.ConsoleApp/README.md",
    "Colour-Kinds.ConsoleApp/sample.jpg",
    "Colour-Kinds.WebApi/main.py",
    "Colour-Kinds.WebApi/app.py",
    "Colour-Kinds.WebApi/requirements.txt",
    "Colour-Kinds.WebApi/requirements-test.txt",
    "Colour-Kinds.WebApi/pytest.ini",
    "Colour-Kinds.WebApi/README.md",
    "Colour-Kinds.WebApi/sample.jpg",
    "Colour-Kinds.WebApi/tests/conftest.py",
    "Colour-Kinds.WebApi/tests/test_app.py",
    "Colour-Kinds.WebApi/colour_kinds_model/__init__.py",
    "Colour-Kinds.WebApi/colour_kinds_model/model_input.py",
    "Colour-Kinds.WebApi/colour_kinds_model/model_output.py",
    "Colour-Kinds.WebApi/colour_kinds_model/consume_model.py",
    "Colour-Kinds.WebApi/colour_kinds_model/preprocess.py",
    "Colour-Kinds.WebApi/colour_kinds_model/bestModel.onnx",
    "Colour-Kinds.WebApi/colour_kinds_model/bestModelMap.json",
    "Colour-Kinds.WebApi/colour_kinds_model/MLModel.zip",
}
ALLOWED_THIRD_PARTY = {"numpy", "PIL", "onnxruntime", "psutil", "colour_kinds_model"}
# The Web API adds its server stack (and pytest/httpx for its own tests); still no torch or modelbuilder.
ALLOWED_IN_WEBAPI = ALLOWED_THIRD_PARTY | {"fastapi", "starlette", "pydantic", "uvicorn", "pytest", "app"}


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def test_generated_file_names(generated: dict[str, Path]) -> None:
    model_project, console_app = generated["model_project"], generated["console_app"]
    assert set(generated) == {"model_project", "console_app", "web_api"}
    assert model_project.name == "Colour-Kinds.Model" and console_app.name == "Colour-Kinds.ConsoleApp"
    assert generated["web_api"].name == "Colour-Kinds.WebApi"
    root = model_project.parent
    assert files_under(root) == EXPECTED_FILES  # nothing else: no staging folder left behind
    assert sorted(path.name for path in root.iterdir()) == [
        "Colour-Kinds.ConsoleApp",
        "Colour-Kinds.Model",
        "Colour-Kinds.WebApi",
    ]


def test_preprocess_is_a_verbatim_copy(generated: dict[str, Path]) -> None:
    copy = generated["model_project"] / "colour_kinds_model" / "preprocess.py"
    assert copy.read_bytes() == Path(preprocess_module.__file__).read_bytes()


def test_the_web_api_carries_the_model_package_unchanged(generated: dict[str, Path]) -> None:
    """One preprocessing and prediction code for all outputs: the Web API's package is the Model's."""
    model_package = generated["model_project"] / "colour_kinds_model"
    webapi_package = generated["web_api"] / "colour_kinds_model"
    assert files_under(webapi_package) == files_under(model_package)
    for name in files_under(model_package):
        assert (webapi_package / name).read_bytes() == (model_package / name).read_bytes(), name
    sample = generated["console_app"] / "sample.jpg"
    assert (generated["web_api"] / "sample.jpg").read_bytes() == sample.read_bytes()


def test_assets_are_the_bundle_and_its_members(generated: dict[str, Path], bundle: Path) -> None:
    package = generated["model_project"] / "colour_kinds_model"
    assert (package / "MLModel.zip").read_bytes() == bundle.read_bytes()
    with zipfile.ZipFile(bundle) as archive:
        assert (package / "bestModel.onnx").read_bytes() == archive.read("bestModel.onnx")
        assert (package / "bestModelMap.json").read_bytes() == archive.read("bestModelMap.json")
    sample = generated["console_app"] / "sample.jpg"
    assert sample.read_bytes()[:3] == b"\xff\xd8\xff"  # the JPEG sample got .jpg from its content


def test_pyproject_depends_on_onnxruntime_numpy_pillow_only(generated: dict[str, Path]) -> None:
    data = tomllib.loads((generated["model_project"] / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["name"] == "colour-kinds-model"
    assert sorted(dep.split(">")[0] for dep in data["project"]["dependencies"]) == [
        "Pillow",
        "numpy",
        "onnxruntime",
    ]
    assert data["tool"]["setuptools"]["packages"] == ["colour_kinds_model"]
    assert sorted(data["tool"]["setuptools"]["package-data"]["colour_kinds_model"]) == [
        "MLModel.zip",
        "bestModel.onnx",
        "bestModelMap.json",
    ]
    requirements = (generated["console_app"] / "requirements.txt").read_text(encoding="utf-8").split()
    assert sorted(line.split(">")[0] for line in requirements) == ["Pillow", "numpy", "onnxruntime"]


def test_web_api_requirements_are_the_server_stack_without_torch(generated: dict[str, Path]) -> None:
    web_api = generated["web_api"]
    requirements = (web_api / "requirements.txt").read_text(encoding="utf-8").split()
    assert sorted(line.split(">")[0] for line in requirements) == [
        "Pillow",
        "fastapi",
        "numpy",
        "onnxruntime",
        "python-multipart",
        "uvicorn",
    ]
    test_requirements = (web_api / "requirements-test.txt").read_text(encoding="utf-8").split("\n")
    assert test_requirements[0] == "-r requirements.txt"
    assert sorted(line.split(">")[0] for line in test_requirements[1:] if line) == ["httpx", "pytest"]


def test_generated_python_imports_only_the_stdlib_numpy_pillow_onnxruntime(
    generated: dict[str, Path],
) -> None:
    sources = sorted(generated["model_project"].rglob("*.py")) + [generated["console_app"] / "main.py"]
    webapi_sources = sorted(generated["web_api"].rglob("*.py"))
    assert len(sources) == 6 and len(webapi_sources) == 9
    for source in sources + webapi_sources:
        allowed = ALLOWED_IN_WEBAPI if source in webapi_sources else ALLOWED_THIRD_PARTY
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))  # also: it is valid Python
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top in allowed, f"{source.name} imports {module}"
        assert "$" not in source.read_text(encoding="utf-8").replace("$$", ""), (
            f"unfilled template in {source}"
        )


def test_console_app_points_at_the_sibling_model_project(generated: dict[str, Path]) -> None:
    main = (generated["console_app"] / "main.py").read_text(encoding="utf-8")
    assert 'MODEL_PROJECT = HERE.parent / "Colour-Kinds.Model"' in main
    assert 'SAMPLE_IMAGE = "sample.jpg"' in main
    assert "from colour_kinds_model import" in main


@pytest.mark.parametrize(
    ("name", "package"),
    [("Flowers", "flowers_model"), ("Colour-Kinds", "colour_kinds_model"), ("MLModel1", "mlmodel1_model")],
)
def test_package_name(name: str, package: str) -> None:
    assert check_project_name(name) == name
    assert package_name(name) == package
    assert package.isidentifier()


@pytest.mark.parametrize("name", ["", "1st", "a b", "../evil", "x" * 65, "naïve"])
def test_invalid_project_names(name: str, tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(InvalidParameterError, match="'name' parameter of generate_code") as info:
        generate_code(tmp_path, name, bundle, None)
    assert info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_regeneration_replaces_and_overwrite_false_refuses(tmp_path: Path, bundle: Path) -> None:
    first = generate_code(tmp_path, "Again", bundle, None)
    marker = first["console_app"] / "stale.txt"
    marker.write_text("old")
    second = generate_code(tmp_path, "Again", bundle, None)
    assert second == first and not marker.exists()
    assert not (second["console_app"] / "sample.jpg").exists()
    assert not (second["web_api"] / "sample.jpg").exists()
    assert 'SAMPLE_IMAGE = ""' in (second["web_api"] / "tests" / "test_app.py").read_text(encoding="utf-8")
    assert 'SAMPLE_IMAGE = ""' in (second["console_app"] / "main.py").read_text(encoding="utf-8")
    with pytest.raises(AlreadyExistsError, match="already exists") as info:
        generate_code(tmp_path, "Again", bundle, None, overwrite=False)
    assert "overwrite" in (info.value.hint or "")


def test_failed_generation_leaves_earlier_output_untouched(tmp_path: Path, bundle: Path) -> None:
    before = generate_code(tmp_path, "Stable", bundle, None)
    snapshot = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    not_an_image = tmp_path / "sample.txt"
    not_an_image.write_text("not an image")
    with pytest.raises(ImageError, match="sample image") as info:
        generate_code(tmp_path, "Stable", bundle, not_an_image)
    assert info.value.hint
    not_an_image.unlink()
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == snapshot
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in before.values())


def test_a_bad_bundle_generates_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "MLModel.zip"
    broken.write_bytes(b"nope")
    with pytest.raises(BundleError, match="not a zip archive"):
        generate_code(tmp_path / "out", "Broken", broken, None)
    assert not (tmp_path / "out").exists()


def test_labels_are_listed_in_the_model_readme(generated: dict[str, Path]) -> None:
    readme = (generated["model_project"] / "README.md").read_text(encoding="utf-8")
    assert "`red`, `green`, `blue`" in readme
    assert "32 x 32" in readme
    assert "from colour_kinds_model import ModelInput, predict" in readme


def test_web_api_readme_says_how_to_run_and_call_it(generated: dict[str, Path]) -> None:
    readme = (generated["web_api"] / "README.md").read_text(encoding="utf-8")
    assert "python main.py --host 127.0.0.1 --port 8080" in readme
    assert "curl -F image=@sample.jpg http://127.0.0.1:8080/predict" in readme
    assert '{"prediction": "red", "scores": {"red": 0.97' in readme
    assert "`red`, `green`, `blue`" in readme and "python -m pytest" in readme
    assert "| 413 |" in readme and "| 415 |" in readme
    assert "$" not in readme
