"""Fixtures of the services tests: an open default workspace, tiny data, the fake trainer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_image_folder
from fake_trainer import use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.services import open_workspace
from modelbuilder.services.workspaces import WorkspaceSession


@pytest.fixture
def session() -> Iterator[WorkspaceSession]:
    opened = open_workspace()
    yield opened
    opened.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)
