"""Run generated code the way a user would: a fresh interpreter in which torch, modelbuilder & co. fail
to import (the ``blockers`` folders of conftest.py come first on PYTHONPATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_python(
    args: list[str], blockers: Path, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run this venv's Python with ``args``, with the modules in ``blockers`` made unimportable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = str(blockers)
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep the shared generated tree exactly as generated
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
