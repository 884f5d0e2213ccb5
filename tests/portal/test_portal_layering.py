"""The portal is a presentation layer over ``modelbuilder.services``, like the CLI and the Python API.

Every read and write of the portal passes a session (``WorkspaceSession``, ``CatalogSession``) to a
services function; no portal module imports a store class or calls a method of a metadata store, an
artifact store or the catalog itself. This reads the portal's source (AST), so a new endpoint that
reaches around the services fails here, with the file and line.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

import modelbuilder.portal

PORTAL_DIR = Path(modelbuilder.portal.__file__).parent

#: Modules that hold stores: the portal reaches them only through ``modelbuilder.services``.
FORBIDDEN_MODULES = ("modelbuilder.store", "modelbuilder.artifacts")
#: Store classes, wherever they are imported from (``services.workspaces`` re-exports some).
FORBIDDEN_NAMES = {"Catalog", "MetadataStore", "SqlAlchemyStore", "ArtifactStore", "LocalArtifactStore"}
#: Attributes that are stores: ``session.store``, ``session.artifacts``, ``state.store(...)``.
STORE_ATTRIBUTES = {"store", "artifacts"}
#: A held catalog session may only be passed on (``catalog=state.catalog``) or closed.
CATALOG_METHODS_ALLOWED = {"close"}


def _absolute(module: str | None, level: int, path: Path) -> str:
    """The absolute module name of an import in ``path`` (a file under ``modelbuilder/portal``)."""
    if level == 0:
        return module or ""
    package = ["modelbuilder", *path.relative_to(PORTAL_DIR.parent).parent.parts]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def violations(source: str, path: Path) -> list[str]:
    """Where ``source`` (the file ``path`` of the portal) reaches a store around the services."""
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        where = f"{path.relative_to(PORTAL_DIR.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names = [alias.name.rpartition(".")[2] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, path)
            modules = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            names = [alias.name for alias in node.names]
        else:
            modules, names = [], []
        for module in modules:
            if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN_MODULES):
                found.append(f"{where}: imports {module}")
        found.extend(f"{where}: imports the store class {name}" for name in names if name in FORBIDDEN_NAMES)
        if isinstance(node, ast.Attribute) and node.attr in STORE_ATTRIBUTES:
            found.append(f"{where}: uses .{node.attr} (call a services function with the session instead)")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if owner_name in STORE_ATTRIBUTES or (
                owner_name == "catalog" and node.func.attr not in CATALOG_METHODS_ALLOWED
            ):
                found.append(f"{where}: calls {owner_name}.{node.func.attr}()")
    return found


def portal_sources() -> list[Path]:
    return sorted(PORTAL_DIR.rglob("*.py"))


def test_the_portal_reaches_stores_only_through_the_services() -> None:
    assert len(portal_sources()) > 10  # the walk really finds the portal's modules
    found = [v for path in portal_sources() for v in violations(path.read_text(encoding="utf-8"), path)]
    assert found == [], "The portal must call services functions, not stores:\n" + "\n".join(found)


# --- the checker finds what it must (each of these is how the portal read its stores before) ----------

PAGES = PORTAL_DIR / "routers" / "pages.py"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("store = state.store(workspace)\nruns = [store.get_run(r) for r in run]", "uses .store"),
        ("found = session.store.get_experiment(name)", "calls store.get_experiment()"),
        ("state.artifacts(workspace).resolve(run.id, path)", "uses .artifacts"),
        ("workspaces = state.catalog.list_workspaces()", "calls catalog.list_workspaces()"),
        ("from ...services.workspaces import Catalog", "imports the store class Catalog"),
        ("from ...store import open_workspace_store", "imports modelbuilder.store"),
        ("from ...artifacts import LocalArtifactStore", "imports modelbuilder.artifacts"),
        ("import modelbuilder.store.sql", "imports modelbuilder.store.sql"),
    ],
)
def test_the_checker_finds_a_store_reached_directly(snippet: str, expected: str) -> None:
    found = violations(snippet, PAGES)
    assert any(expected in line for line in found), found
    assert all(line.startswith("portal/routers/pages.py:") for line in found)


def test_the_checker_allows_passing_sessions_to_services() -> None:
    snippet = (
        "from ...services import runs as run_service\n"
        "from ...services import workspaces as workspace_service\n"
        "run = run_service.get_run(state.session(workspace), run_id)\n"
        "groups = workspace_service.list_resource_groups(catalog=state.catalog)\n"
        "self.catalog.close()\n"
    )
    assert violations(snippet, PAGES) == []


def test_the_checker_fails_on_the_pages_module_before_the_services_layer() -> None:
    """The pages module of commit 1598aef read the store itself (compare, computes, results)."""
    try:
        old = subprocess.run(
            ["git", "show", "1598aef:src/modelbuilder/portal/routers/pages.py"],
            cwd=PORTAL_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout with that commit (an installed package, a shallow clone)")
    found = violations(old, PAGES)
    assert len([line for line in found if "uses .store" in line]) == 3, found
