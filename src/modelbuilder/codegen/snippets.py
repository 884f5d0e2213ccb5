"""Copy-paste snippets that use a run's outputs: what the portal's Consume step shows.

Every snippet runs from the folder that holds the run's outputs (``--output DIR`` of a training run, or
``modelbuilder run download RUN --output DIR``), where ``MLModel.zip`` and the generated ``<Name>.Model``,
``<Name>.ConsoleApp`` and ``<Name>.WebApi`` folders lie side by side. The tests in tests/codegen run each
snippet exactly as written here, so a snippet that stops working fails a test.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ..errors import InvalidParameterError
from .generator import BUNDLE_NAME, check_project_name, package_name

DEFAULT_IMAGE = "photo.jpg"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Snippet:
    """One way to use the model.

    Attributes:
        key: a stable identifier (``python_api``, ``model_package``, ``console_app``, ``web_api``,
            ``web_api_request``).
        title: what the snippet does, for a heading.
        language: ``python`` or ``bash`` (for highlighting).
        code: the snippet.
        setup: shell commands to run once before ``code`` (empty when none are needed).
    """

    key: str
    title: str
    language: str
    code: str
    setup: str = ""


def consume_snippets(name: str, *, image: str = DEFAULT_IMAGE, port: int = DEFAULT_PORT) -> list[Snippet]:
    """The snippets for the projects generated under ``name``, predicting ``image``.

    Args:
        name: the project name the run generated its code under (its ``<Name>.Model`` and so on).
        image: the image file the snippets classify, relative to the outputs folder.
        port: the port the Web API snippets use.

    Raises:
        InvalidParameterError: ``name`` is not a valid project name, ``image`` is empty or ``port`` is not
            1-65535.
    """
    check_project_name(name)
    if not isinstance(image, str) or not image.strip() or "\n" in image:
        raise InvalidParameterError(
            "The 'image' parameter of consume_snippets must be a file name on one line. "
            f"Got {image!r} instead.",
            hint="Pass the image to classify, for example 'photo.jpg'.",
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidParameterError(
            f"The 'port' parameter of consume_snippets must be an integer in 1-65535. Got {port!r} instead.",
            hint="Use the port the Web API listens on, 8080 by default.",
        )
    package = package_name(name)
    python_image = json.dumps(image, ensure_ascii=False)  # a valid Python string literal, in double quotes
    url = f"http://127.0.0.1:{port}"
    return [
        Snippet(
            "python_api",
            "Predict from Python with modelbuilder (torch-free: onnxruntime, numpy, Pillow)",
            "python",
            "import modelbuilder\n"
            "\n"
            f'engine = modelbuilder.load_model("{BUNDLE_NAME}")\n'
            f"output = engine.predict({python_image})\n"
            "print(output.prediction)\n"
            "print(dict(zip(engine.labels, output.score)))\n",
        ),
        Snippet(
            "model_package",
            f"Predict with the generated package {name}.Model (no modelbuilder needed)",
            "python",
            f"from {package} import ModelInput, predict\n"
            "\n"
            f"output = predict(ModelInput(image_source={python_image}))\n"
            "print(output.prediction)\n"
            "print(output.score)\n",
            setup=f"pip install ./{name}.Model\n",
        ),
        Snippet(
            "console_app",
            f"Predict from the command line with {name}.ConsoleApp",
            "bash",
            f"pip install -r {name}.ConsoleApp/requirements.txt\n"
            f"python {name}.ConsoleApp/main.py {shlex.quote(image)}\n",
        ),
        Snippet(
            "web_api",
            f"Serve predictions over HTTP with {name}.WebApi",
            "bash",
            f"pip install -r {name}.WebApi/requirements.txt\n"
            f"python {name}.WebApi/main.py --host 127.0.0.1 --port {port}\n",
        ),
        Snippet(
            "web_api_request",
            "Call the Web API (from another terminal)",
            "bash",
            f"curl -F {shlex.quote('image=@' + image)} {url}/predict\n",
        ),
    ]
