"""Fixtures of the CLI tests: a CliRunner, tiny data, the fake trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import Cli

from factories import make_image_folder
from fake_trainer import use_fake_trainer  # noqa: F401 - a fixture


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)
