"""A team workspace: two MODELBUILDER_HOMEs (two users, two machines) share one PostgreSQL store and one
artifact root, through the CLI, with the fake trainer's worker processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from factories import make_image_folder
from fake_trainer import OPTIONS_ENV, use_fake_trainer  # noqa: F401 - a fixture
from modelbuilder.cli import app

pytestmark = pytest.mark.usefixtures("use_fake_trainer")


class Home:
    """Runs ``modelbuilder`` commands as one user: with one MODELBUILDER_HOME."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch, password: str) -> None:
        self.folder = folder
        self.monkeypatch = monkeypatch
        self.password = password

    def __call__(self, *args: object, ok: bool = True) -> Result:
        self.monkeypatch.setenv("MODELBUILDER_HOME", str(self.folder))
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.stdout + result.stderr
        # Whatever a command prints, the store's password is never part of it.
        assert self.password not in result.stdout + result.stderr
        return result

    def json(self, *args: object) -> object:
        return json.loads(self(*args, "--json").stdout)


def _portal_json(user: Home, path: str) -> object:
    """GET ``path`` from the portal of ``user``'s home (in process), checking no password leaks."""
    from fastapi.testclient import TestClient

    from modelbuilder.portal import create_app

    user.monkeypatch.setenv("MODELBUILDER_HOME", str(user.folder))
    with TestClient(create_app("team-ws", port=8765), base_url="http://127.0.0.1:8765") as client:
        response = client.get(path)
    assert response.status_code == 200, (path, response.text[:500])
    assert user.password not in response.text, path
    return response.json()


def _run_id(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("Monitor current run: "))
    return line.rsplit("/", 1)[1]


def test_two_homes_share_one_postgresql_workspace(
    postgres_server: object, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = postgres_server.password  # type: ignore[attr-defined]
    assert password in postgres_url
    alice = Home(tmp_path / "home-alice", monkeypatch, password)
    bob = Home(tmp_path / "home-bob", monkeypatch, password)
    # Shaped like a default artifact root (<folder>/<name>/artifacts), yet only artifacts may go there.
    shared = tmp_path / "mnt" / "team-ws" / "artifacts"
    shared.mkdir(parents=True)
    data = make_image_folder(tmp_path / "flowers", classes=2, per_class=3, size=8)

    created = alice("workspace", "create", "team-ws", "--store", postgres_url, "--artifacts", shared)
    assert "Created workspace 'team-ws'" in created.stderr and "***" in created.stderr
    attached = bob("workspace", "attach", "team-ws", "--store", postgres_url)
    assert f"artifacts {shared.resolve()}" in attached.stderr
    for user in (alice, bob):
        shown = user.json("workspace", "show", "team-ws")
        assert shown["artifact_root"] == str(shared.resolve())  # type: ignore[index]
        assert "***" in shown["store_url"]  # type: ignore[index]
        assert "***" in user("workspace", "list").stdout

    # Alice trains; Bob sees her experiment and run, and downloads her outputs.
    trained = alice("train", data, "--workspace", "team-ws", "--experiment", "team-exp", "--no-portal")
    alice_run = _run_id(trained.stdout)
    bob_runs = bob.json("run", "list", "--workspace", "team-ws")
    assert [(r["id"], r["status"]) for r in bob_runs] == [(alice_run, "Completed")]  # type: ignore[index,union-attr]
    assert [e["name"] for e in bob.json("experiment", "list", "--workspace", "team-ws")] == ["team-exp"]  # type: ignore[index,union-attr]
    bob("run", "download", alice_run, "--workspace", "team-ws", "--output", tmp_path / "bob-out")
    model = (tmp_path / "bob-out" / "bestModel.onnx").read_bytes()
    assert model == (shared / alice_run / "bestModel.onnx").read_bytes()

    # Bob starts a long run; Alice cancels it; Bob's worker stops and ends it Canceled.
    marker = tmp_path / "bob-training"
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"epochs": 200, "epoch_seconds": 0.1, "marker": str(marker)}))
    started = bob(
        "train", data, "--workspace", "team-ws", "--experiment", "team-exp", "--no-portal", "--detach"
    )
    bob_run = _run_id(started.stdout)
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert time.monotonic() < deadline, "Bob's worker never started training"
        time.sleep(0.2)
    assert bob_run in alice("run", "list", "--workspace", "team-ws").stdout
    # Alice's portal shows Bob's run live (running, with its trials), and her own completed one.
    shown = _portal_json(alice, f"/api/workspaces/team-ws/runs/{bob_run}")
    assert shown["status"] == "Running", shown  # type: ignore[index]
    listed = _portal_json(alice, "/api/workspaces/team-ws/experiments/team-exp/runs")
    assert {alice_run, bob_run} <= {r["id"] for r in listed["items"]}, listed  # type: ignore[index]
    # Alice's commands reap lost runs, but Bob's worker is not hers to judge: his run stays alive.
    assert alice.json("run", "show", bob_run, "--workspace", "team-ws")["status"] == "Running"  # type: ignore[index]
    alice("run", "cancel", bob_run, "--workspace", "team-ws")
    status = ""
    while status != "Canceled":
        assert time.monotonic() < deadline, f"Bob's run is still {status}"
        time.sleep(0.5)
        status = bob.json("run", "show", bob_run, "--workspace", "team-ws")["status"]  # type: ignore[index]
    assert alice.json("run", "show", bob_run, "--workspace", "team-ws")["status"] == "Canceled"  # type: ignore[index]

    # Deleting the workspace on one machine leaves the shared folders (and the other machine) alone, also
    # when the shared root looks like a default one (<folder>/<name>/artifacts).
    shared_files = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "mnt").rglob("*"))
    alice("workspace", "delete", "team-ws", "--yes")
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "mnt").rglob("*")) == shared_files
    assert (shared / alice_run / "bestModel.onnx").is_file()
    assert bob.json("run", "show", alice_run, "--workspace", "team-ws")["status"] == "Completed"  # type: ignore[index]


def test_attach_refuses_a_store_without_that_workspace(
    postgres_server: object, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = postgres_server.password  # type: ignore[attr-defined]
    user = Home(tmp_path / "home", monkeypatch, password)
    empty = user("workspace", "attach", "team-ws", "--store", postgres_url, ok=False)
    assert empty.exit_code == 1
    assert "holds no workspace" in empty.stderr and "modelbuilder workspace create team-ws" in empty.stderr
    user("workspace", "create", "team-ws", "--store", postgres_url, "--artifacts", tmp_path / "team")
    other = Home(tmp_path / "other-home", monkeypatch, password)
    wrong = other("workspace", "attach", "other-ws", "--store", postgres_url, ok=False)
    assert wrong.exit_code == 1 and "holds workspace 'team-ws', not 'other-ws'" in wrong.stderr
    twice = other("workspace", "create", "team-ws", "--store", postgres_url, ok=False)
    assert twice.exit_code == 1 and "modelbuilder workspace attach team-ws --store URL" in twice.stderr
    assert other("workspace", "list").stdout.count("team-ws") == 0  # the refused create left no entry


def test_the_python_api_creates_and_attaches_a_team_workspace(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelbuilder import Workspace

    shared = tmp_path / "team-artifacts"
    monkeypatch.setenv("MODELBUILDER_HOME", str(tmp_path / "home-alice"))
    alice = Workspace.create("team-ws", store=postgres_url, artifacts=shared)
    alice.experiment("api-exp")
    assert alice.artifact_root == shared.resolve()
    alice.close()
    monkeypatch.setenv("MODELBUILDER_HOME", str(tmp_path / "home-bob"))
    bob = Workspace.attach("team-ws", store=postgres_url)
    assert bob.artifact_root == shared.resolve() and list(bob.experiments) == ["api-exp"]
    assert postgres_url not in repr(bob) and postgres_url not in repr(bob._entity)
    bob.close()
