"""Fixtures of the portal tests: a filled workspace and a TestClient that talks to the app as a browser on
127.0.0.1:8765 would (right Host header; Origin and token for state-changing requests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnx")

from fastapi.testclient import TestClient  # noqa: E402
from portal_fixtures import BASE_URL, PORT, WORKSPACE, PortalWorld, build_model, make_world  # noqa: E402

from modelbuilder.portal import create_app  # noqa: E402
from portal_processes import foreign_portal, own_portals, portal_port  # noqa: E402, F401 - fixtures


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour classifier's bestModel.onnx, bestModelMap.json and MLModel.zip (read-only)."""
    return build_model(tmp_path_factory.mktemp("portal-model"))


@pytest.fixture
def world(tmp_path: Path, model_dir: Path) -> Iterator[PortalWorld]:
    opened = make_world(tmp_path, model_dir)
    yield opened
    opened.close()


@pytest.fixture
def client(world: PortalWorld) -> Iterator[TestClient]:
    app = create_app(WORKSPACE, host="127.0.0.1", port=PORT)
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client
