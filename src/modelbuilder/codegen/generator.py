"""Generate ``<Name>.Model``, ``<Name>.ConsoleApp`` and ``<Name>.WebApi`` from MLModel.zip.

``<Name>.Model`` is an installable model package; ``<Name>.ConsoleApp`` imports it from the sibling
folder; ``<Name>.WebApi`` (a FastAPI service) carries its own copy of the same package, so the Web API
folder can be downloaded and deployed alone.

Templates are plain files under ``codegen/templates`` filled with :class:`string.Template`
(``$name`` placeholders; a literal dollar sign is written ``$$``). ``preprocess.py`` is copied
verbatim from :mod:`modelbuilder.pipeline.preprocess` at generation time, so the generated code
preprocesses exactly as training and :class:`~modelbuilder.pipeline.PredictionEngine` do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template

from PIL import Image

from ..errors import AlreadyExistsError, ImageError, InvalidParameterError
from ..pipeline.bundle import MODEL_NAME, modelbuilder_version, read_bundle
from ..pipeline.label_map import LABEL_MAP_NAME
from ..pipeline.preprocess import ImageDecodeError, open_image

logger = logging.getLogger(__name__)

BUNDLE_NAME = "MLModel.zip"
_NAME_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SAMPLE_SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "BMP": ".bmp",
    "GIF": ".gif",
    "TIFF": ".tiff",
    "WEBP": ".webp",
}

# (template under templates/, path in the generated project; {package} is the Python package name)
_MODEL_FILES = (
    ("model/pyproject.toml.tmpl", "pyproject.toml"),
    ("model/README.md.tmpl", "README.md"),
)
# The model package itself: written into <Name>.Model and, as the same files, into <Name>.WebApi.
_PACKAGE_FILES = (
    ("model/package/__init__.py.tmpl", "{package}/__init__.py"),
    ("model/package/model_input.py.tmpl", "{package}/model_input.py"),
    ("model/package/model_output.py.tmpl", "{package}/model_output.py"),
    ("model/package/consume_model.py.tmpl", "{package}/consume_model.py"),
)
_CONSOLE_FILES = (
    ("console/main.py.tmpl", "main.py"),
    ("console/requirements.txt.tmpl", "requirements.txt"),
    ("console/README.md.tmpl", "README.md"),
)
_WEBAPI_FILES = (
    ("webapi/main.py.tmpl", "main.py"),
    ("webapi/app.py.tmpl", "app.py"),
    ("webapi/requirements.txt.tmpl", "requirements.txt"),
    ("webapi/requirements-test.txt.tmpl", "requirements-test.txt"),
    ("webapi/pytest.ini.tmpl", "pytest.ini"),
    ("webapi/README.md.tmpl", "README.md"),
    ("webapi/tests/conftest.py.tmpl", "tests/conftest.py"),
    ("webapi/tests/test_app.py.tmpl", "tests/test_app.py"),
)


def package_name(name: str) -> str:
    """The Python package of ``<Name>.Model``: ``"Flower-Kinds"`` -> ``"flower_kinds_model"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + "_model"


def check_project_name(name: str) -> str:
    """Return ``name`` if it can name the generated projects.

    Raises:
        InvalidParameterError: not 1-64 letters, digits, '_' or '-', starting with a letter.
    """
    if not isinstance(name, str) or not _NAME_RULE.match(name):
        raise InvalidParameterError(
            "The 'name' parameter of generate_code must be 1-64 letters, digits, '_' or '-', "
            f"starting with a letter. Got {name!r} instead.",
            hint="Use a name like 'Flowers' or 'defect-detector': it becomes <Name>.Model, "
            "<Name>.ConsoleApp and <Name>.WebApi.",
        )
    return name


def generate_code(
    output_dir: str | os.PathLike[str],
    name: str,
    bundle_path: str | os.PathLike[str],
    sample_image: str | os.PathLike[str] | None,
    *,
    overwrite: bool = True,
) -> dict[str, Path]:
    """Write ``<Name>.Model``, ``<Name>.ConsoleApp`` and ``<Name>.WebApi`` into ``output_dir``.

    All folders are built in a staging folder next to them and then renamed into place, so a
    failure leaves any earlier generation untouched.

    Args:
        output_dir: the folder that receives the projects.
        name: the project name (see check_project_name).
        bundle_path: a verified MLModel.zip; its model and label map are copied into the package.
        sample_image: an image from the training data, copied as ``sample.<ext>`` for the console
            app to predict when run without arguments and for the Web API's tests; None for no sample.
        overwrite: replace existing generated folders (default) instead of raising.

    Returns:
        ``{"model_project": <Name>.Model folder, "console_app": <Name>.ConsoleApp folder,
        "web_api": <Name>.WebApi folder}``.

    Raises:
        InvalidParameterError: bad name.
        BundleError: the bundle is missing or fails verification.
        ImageError: the sample image cannot be read.
        AlreadyExistsError: a target folder exists and ``overwrite`` is False.
    """
    check_project_name(name)
    output = Path(output_dir)
    targets = {
        "model_project": output / f"{name}.Model",
        "console_app": output / f"{name}.ConsoleApp",
        "web_api": output / f"{name}.WebApi",
    }
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not overwrite:
        raise AlreadyExistsError(
            f"Generated code already exists: {', '.join(existing)}.",
            hint="Delete those folders, choose another output folder or name, or pass overwrite=True.",
        )
    bundle = read_bundle(bundle_path, check_model=True)
    sample_suffix = _sample_suffix(Path(sample_image)) if sample_image is not None else None
    package = package_name(name)
    labels = bundle.labels
    values = {
        "name": name,
        "package": package,
        "distribution": package.replace("_", "-"),
        "model_dir": targets["model_project"].name,
        "console_dir": targets["console_app"].name,
        "webapi_dir": targets["web_api"].name,
        "modelbuilder_version": modelbuilder_version(),
        "num_labels": str(len(labels)),
        "labels_text": ", ".join(f"`{label}`" for label in labels[:20])
        + (", ..." if len(labels) > 20 else ""),
        "input_size": str(bundle.preprocessing.crop_size),
        "sample_name": f"sample{sample_suffix}" if sample_suffix else "",
        "sample_note": "" if sample_suffix else " (none was generated: give an image)",
        "sample_file": (
            f"\n- `sample{sample_suffix}`: an image from the training data" if sample_suffix else ""
        ),
        "curl_image": f"sample{sample_suffix}" if sample_suffix else "photo.jpg",
        # Inside a JSON string in the README: escaped as JSON would.
        "first_label": json.dumps(labels[0], ensure_ascii=False)[1:-1],
    }
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.codegen-", dir=output))
    try:
        model_project = staging / targets["model_project"].name
        console_app = staging / targets["console_app"].name
        web_api = staging / targets["web_api"].name
        _render_all(_MODEL_FILES, model_project, values)
        _render_all(_CONSOLE_FILES, console_app, values)
        _render_all(_WEBAPI_FILES, web_api, values)
        for project in (model_project, web_api):
            _render_all(_PACKAGE_FILES, project, values)
            package_dir = project / package
            (package_dir / "preprocess.py").write_bytes(_preprocess_source())
            (package_dir / MODEL_NAME).write_bytes(bundle.model_bytes)
            (package_dir / LABEL_MAP_NAME).write_bytes(bundle.label_map_bytes)
            shutil.copyfile(bundle_path, package_dir / BUNDLE_NAME)
        if sample_image is not None:
            for project in (console_app, web_api):
                shutil.copyfile(sample_image, project / values["sample_name"])
        for key, target in targets.items():
            _replace_folder(staging / target.name, target)
            logger.info("Generated %s: %s", key, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return targets


def template_text(relative: str) -> str:
    """The text of one template under ``codegen/templates``."""
    return (
        resources.files("modelbuilder.codegen")
        .joinpath("templates", *relative.split("/"))
        .read_text(encoding="utf-8")
    )


def _render_all(files: tuple[tuple[str, str], ...], root: Path, values: Mapping[str, str]) -> None:
    for template, relative in files:
        target = root / relative.format(package=values["package"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(template_text(template)).substitute(values), encoding="utf-8")


def _preprocess_source() -> bytes:
    # Read the file's bytes (not inspect.getsource) so the copy is byte-identical to the source.
    return resources.files("modelbuilder.pipeline").joinpath("preprocess.py").read_bytes()


def _sample_suffix(sample: Path) -> str:
    """The sample's file extension, from its content (images are recognised by content, not name).

    Raises:
        ImageError: the sample is missing or not a readable image.
    """
    try:
        open_image(sample)
        with Image.open(sample) as img:
            image_format = img.format or ""
    except (ImageDecodeError, OSError) as exc:
        raise ImageError(
            f"The sample image for the console app cannot be used: {exc}",
            hint="Give an image file from the training data, or None for no sample.",
        ) from exc
    return _SAMPLE_SUFFIXES.get(image_format, sample.suffix.lower() or ".img")


def _replace_folder(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
