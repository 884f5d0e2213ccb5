"""Code generation: ``<Name>.Model``, ``<Name>.ConsoleApp`` and ``<Name>.WebApi`` from an MLModel.zip.

The generated code needs only onnxruntime, numpy and Pillow (the Web API also FastAPI and uvicorn),
never modelbuilder or torch.
"""

from __future__ import annotations

from .generator import check_project_name, generate_code, package_name
from .snippets import Snippet, consume_snippets

__all__ = ["Snippet", "check_project_name", "consume_snippets", "generate_code", "package_name"]
