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


def test_every_error_of_the_documented_tree_is_exported() -> None:
    import builtins
    import inspect
    import re

    from modelbuilder import errors

    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, errors.ModelBuilderError)
        and value.__module__ == errors.__name__
        and not name.startswith("_")
    }
    assert "SchemaVersionError" in defined and "ModelBuilderError" in defined
    # The tree in the module's docstring documents every error class, and only those.
    tree = (errors.__doc__ or "").split("ModelBuilderError", 1)[1]
    named = set(re.findall(r"\b([A-Z][A-Za-z]+Error)\b", tree)) | {"ModelBuilderError"}
    assert {name for name in named if not hasattr(builtins, name)} == defined  # minus ValueError & co
    missing = sorted(defined - set(modelbuilder.__all__))
    assert missing == [], f"add these to modelbuilder._EXPORTS: {missing}"
    for name in defined:
        assert getattr(modelbuilder, name) is getattr(errors, name)
