"""The public API: sorted, complete, importable, and `import modelbuilder` stays light."""

from __future__ import annotations

import subprocess
import sys

import modelbuilder


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert modelbuilder.__all__ == sorted(modelbuilder.__all__)
    for name in modelbuilder.__all__:
        assert getattr(modelbuilder, name) is not None, name


def test_importing_the_package_pulls_in_no_heavy_dependency() -> None:
    code = (
        "import sys, modelbuilder; "
        "from modelbuilder import load_model, TrainingConfig, ModelBuilderError; "
        "heavy = [m for m in ('torch', 'timm', 'ray', 'fastapi', 'sqlalchemy') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
