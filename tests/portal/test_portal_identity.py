"""The "Monitor current run" link never lies: a portal says which MODELBUILDER_HOME it serves, and links come
only from a portal of the run's own home, even when another home's portal holds the preferred port.

Every test has a free port as its preferred port (never the real 8765); the README's quickstart flows (CLI
and Python) run with a foreign portal there and follow the links they print.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from portal_fixtures import WORKSPACE, make_world
from typer.testing import CliRunner

from factories import make_image_folder
from fake_trainer import OPTIONS_ENV, fake_config, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder import Workspace, settings
from modelbuilder.cli import app as cli_app
from modelbuilder.errors import InvalidStateError
from modelbuilder.portal import ensure_portal
from modelbuilder.portal.launcher import portal_health
from modelbuilder.workspace import train
from portal_processes import ForeignPortal, get, stop_portals_of

pytestmark = [pytest.mark.usefixtures("portal_port", "own_portals"), pytest.mark.timeout(180)]

LINK = re.compile(r"^Monitor current run: (http://127\.0\.0\.1:(\d+)/workspaces/([\w-]+)/runs/(\w+))$", re.M)


def _home() -> str:
    return os.path.realpath(settings.home())


def _assert_opens_run(url: str, run_id: str, foreign: ForeignPortal | None = None) -> None:
    """``url`` answers 200 with the run's page, from a portal of this test's home (not the foreign one)."""
    status, page = get(url)
    assert status == 200, page[:500]
    assert run_id in page
    port = int(url.split("/")[2].rsplit(":", 1)[1])
    assert port != 8765
    health = portal_health(port)
    assert health is not None and health["home"] == _home()
    if foreign is not None:
        assert port != foreign.port


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images", classes=2, per_class=3, size=8)


def test_health_says_which_home_and_workspaces_the_portal_serves(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["service"] == "modelbuilder-portal" and health["pid"] == os.getpid()
    assert health["home"] == _home()
    assert health["port"] == 8765  # the client fixture's app thinks it is bound there; nothing is
    assert re.fullmatch(r"[0-9a-f]{16}", health["instance"])
    assert WORKSPACE in health["workspaces"]


@pytest.mark.usefixtures("use_fake_trainer")
def test_cli_quickstart_link_opens_the_run_with_a_foreign_portal_on_the_default_port(
    foreign_portal: ForeignPortal, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"trials": 1}))
    quickstart = ["train", str(data), "--output", str(tmp_path / "out"), "--time", "5m"]
    result = CliRunner().invoke(cli_app, quickstart)
    assert result.exit_code == 0, result.stderr
    found = LINK.search(result.stdout)
    assert found is not None, result.stdout
    url, _, workspace, run_id = found.groups()
    assert workspace == "default"
    _assert_opens_run(url, run_id, foreign_portal)
    # The foreign portal does not know this run: that link would have been a 404.
    assert get(f"{foreign_portal.base_url}/workspaces/default/runs/{run_id}")[0] == 404
    # A second run reuses this home's portal (found through its record), not the foreign one.
    again = CliRunner().invoke(cli_app, ["train", str(data), "--time", "5m"])
    second = LINK.search(again.stdout)
    assert second is not None and second.group(2) == found.group(2)
    _assert_opens_run(second.group(1), second.group(4), foreign_portal)


@pytest.mark.usefixtures("use_fake_trainer")
def test_python_quickstart_links_open_the_run_with_a_foreign_portal_on_the_default_port(
    foreign_portal: ForeignPortal, data: Path, tmp_path: Path
) -> None:
    with Workspace.create("vision-ws", resource_group="team-a", region="local") as ws:
        run = ws.experiment("flowers").submit(fake_config(data, trials=1), compute="local")
        run.wait_for_completion()
        with pytest.raises(InvalidStateError, match="No portal is running for MODELBUILDER_HOME") as info:
            run.get_portal_url(start=False)
        assert info.value.hint == "Start one: modelbuilder portal --workspace vision-ws"
        url = run.get_portal_url()  # starts this home's portal
        _assert_opens_run(url, run.id, foreign_portal)
        assert run.get_portal_url(start=False) == url
        assert get(ws.get_portal_url())[0] == 200
        result = train(data, output=tmp_path / "out", time="5m", workspace="vision-ws")
    assert result.portal_url.startswith(url.split("/workspaces/")[0])
    _assert_opens_run(result.portal_url, result.run_id, foreign_portal)


def test_two_homes_on_one_machine_each_get_a_working_link_at_once(
    tmp_path: Path, own_portals: Path, monkeypatch: pytest.MonkeyPatch, portal_port: int, model_dir: Path
) -> None:
    home_b = tmp_path / "home-b"
    worlds, links = [], []
    try:
        for home in (own_portals, home_b):
            monkeypatch.setenv("MODELBUILDER_HOME", str(home))
            world = make_world(tmp_path / home.name, model_dir)
            worlds.append(world)
            run_id = world.start_run()
            base = ensure_portal(WORKSPACE)
            assert base is not None
            links.append((home, base, run_id))
        (_, base_a, run_a), (_, base_b, run_b) = links
        assert base_a == f"http://127.0.0.1:{portal_port}" and base_b != base_a  # A came first
        for home, base, run_id in links:
            monkeypatch.setenv("MODELBUILDER_HOME", str(home))
            _assert_opens_run(settings.portal_run_url(WORKSPACE, run_id, base), run_id)
            assert ensure_portal(WORKSPACE) == base  # reused, each home its own
        assert get(settings.portal_run_url(WORKSPACE, run_b, base_a))[0] == 404
        assert get(settings.portal_run_url(WORKSPACE, run_a, base_b))[0] == 404
    finally:
        for world in worlds:
            world.close()
        stop_portals_of(home_b)


def test_a_record_of_a_dead_portal_is_forgotten(own_portals: Path) -> None:
    from modelbuilder.portal.identity import PortalIdentity, record_path, write_record
    from modelbuilder.portal.launcher import find_portal

    code = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dead_pid = int(done.stdout)
    write_record(dataclasses.replace(PortalIdentity.new(WORKSPACE, "127.0.0.1", 1), pid=dead_pid))
    assert record_path(1).is_file()
    assert find_portal() is None
    assert not record_path(1).exists()


@pytest.mark.usefixtures("use_fake_trainer")  # the link line is the point, not a real training
def test_a_link_is_never_a_guess_without_a_portal(data: Path, foreign_portal: ForeignPortal) -> None:
    result = CliRunner().invoke(cli_app, ["train", str(data), "--time", "5m", "--no-portal"])
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("Monitor current run:"))
    run_id = line.rsplit("/", 1)[1]
    assert line == (
        "Monitor current run: no portal is running; start one (modelbuilder portal --workspace default), "
        f"then open /workspaces/default/runs/{run_id}"
    )
    assert str(foreign_portal.port) not in result.stdout


def test_the_portal_command_moves_off_a_foreign_portal_and_reuses_this_homes(
    foreign_portal: ForeignPortal, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[int] = []
    module = type(sys)("modelbuilder.portal.server")
    module.serve = lambda workspace_name, host, port: served.append(port)  # type: ignore[attr-defined]
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "modelbuilder.portal.server", module)
        moved = CliRunner().invoke(cli_app, ["portal"])
    assert moved.exit_code == 0, moved.stderr
    assert len(served) == 1 and served[0] != foreign_portal.port
    assert f"Port {foreign_portal.port} is in use" in moved.stderr
    base = ensure_portal("default")  # the real server, on a free port
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "modelbuilder.portal.server", module)
        again = CliRunner().invoke(cli_app, ["portal"])
    assert again.exit_code == 0 and len(served) == 1  # nothing new was served
    assert f"already runs: {base}/workspaces/default" in again.stderr
