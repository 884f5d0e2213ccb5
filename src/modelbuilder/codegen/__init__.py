"""Code generation: ``<Name>.Model`` and ``<Name>.ConsoleApp`` projects from an MLModel.zip.

The generated code needs only onnxruntime, numpy and Pillow (never modelbuilder or torch).
"""

from __future__ import annotations

from .generator import check_project_name, generate_code, package_name

__all__ = ["check_project_name", "generate_code", "package_name"]
