"""Fixtures of the services tests: an open default workspace, tiny data, the fake trainer.

In the modules of ``BOTH_STORES`` (the end-to-end run tests), ``session`` is the default workspace once on
its SQLite file and once on a PostgreSQL database of the session's server (tests/pg_server.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder import settings
from modelbuilder.services import open_workspace
from modelbuilder.services.workspaces import WorkspaceSession, create_workspace

#: Test modules whose ``session`` runs on both store backends.
BOTH_STORES = {"test_training_runs"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "session" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_STORES:
        metafunc.parametrize("session", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def session(request: pytest.FixtureRequest) -> Iterator[WorkspaceSession]:
    if getattr(request, "param", "sqlite") == "postgresql":
        url = request.getfixturevalue("postgres_url")
        create_workspace(settings.default_workspace_name(), store_url=url)
    opened = open_workspace()
    yield opened
    opened.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)
