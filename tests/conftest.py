"""Test isolation: every test gets its own MODELBUILDER_HOME, runs offline, with a clean env."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("MODELBUILDER_"):
            monkeypatch.delenv(key, raising=False)
    home = tmp_path_factory.mktemp("mbhome")
    monkeypatch.setenv("MODELBUILDER_HOME", str(home))
    monkeypatch.setenv("MODELBUILDER_OFFLINE", "1")
    monkeypatch.setenv("MODELBUILDER_NO_PROGRESS", "1")
    random.seed(0)
    np.random.seed(0)
    yield home
