"""Resource groups and workspaces through the services: default workspace, cascade delete, stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelbuilder import settings
from modelbuilder.entities import RunStatus
from modelbuilder.errors import (
    AlreadyExistsError,
    InvalidNameError,
    InvalidStateError,
    ResourceGroupNotFoundError,
    WorkspaceNotFoundError,
)
from modelbuilder.services import workspaces as service
from modelbuilder.store import sqlite_file_url, workspace_folder


def test_the_default_workspace_is_created_on_first_use(isolated_home: Path) -> None:
    assert service.list_workspaces() == []
    with service.open_workspace() as session:
        assert session.name == "default"
        assert session.workspace.resource_group == "default" and session.workspace.region == "local"
        assert [c.name for c in session.store.list_computes()] == ["local"]
        assert session.artifacts.root.is_dir()
        assert session.folder == isolated_home / "workspaces" / "default"
    with service.open_workspace("default") as again:  # the same one, not a second
        assert again.workspace == session.workspace
    assert [w.name for w in service.list_workspaces()] == ["default"]


def test_the_default_workspace_name_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBUILDER_WORKSPACE", "team-ws")
    assert service.resolve_workspace().name == "team-ws"
    assert settings.default_workspace_name() == "team-ws"


def test_a_named_workspace_must_exist() -> None:
    with pytest.raises(WorkspaceNotFoundError, match="'nope-ws' not found") as info:
        service.open_workspace("nope-ws")
    assert "modelbuilder workspace create nope-ws" in (info.value.hint or "")
    assert service.list_workspaces() == []


def test_create_workspace_validates_and_refuses_duplicates() -> None:
    created = service.create_workspace("vision-1", resource_group="team-a")
    assert (created.resource_group, created.region) == ("team-a", "local")
    with pytest.raises(AlreadyExistsError, match="already exists"):
        service.create_workspace("VISION-1")
    for bad in ("ab", "a" * 34, "-abc", "ab_c"):
        with pytest.raises(InvalidNameError):
            service.create_workspace(bad)
    assert [w.name for w in service.list_workspaces()] == ["vision-1"]


def test_a_workspace_can_use_another_store_url(tmp_path: Path) -> None:
    url = sqlite_file_url(tmp_path / "elsewhere" / "meta.db")
    created = service.create_workspace("custom-store", store_url=url)
    assert created.store_url == url
    with service.open_workspace("custom-store") as session:
        session.store.get_or_create_experiment("exp1")
    assert (tmp_path / "elsewhere" / "meta.db").is_file()


def test_deleting_a_resource_group_removes_its_workspaces_and_files() -> None:
    kept = service.create_workspace("kept-ws", resource_group="keep")
    doomed = [service.create_workspace(name, resource_group="doomed") for name in ("ws-a", "ws-b")]
    for workspace in doomed:
        with service.open_workspace(workspace.name) as session:
            session.artifacts.put_bytes("run123", b"x", "file.txt")
    group, held = service.get_resource_group("doomed")
    assert [w.name for w in held] == ["ws-a", "ws-b"]
    deletion = service.delete_resource_group("doomed")
    assert deletion.resource_group == group and [w.name for w in deletion.workspaces] == ["ws-a", "ws-b"]
    assert all(not workspace_folder(w).exists() for w in doomed)
    assert workspace_folder(kept).exists()
    assert [w.name for w in service.list_workspaces()] == ["kept-ws"]
    with pytest.raises(ResourceGroupNotFoundError):
        service.get_resource_group("doomed")


def test_deletion_is_refused_while_a_run_is_active() -> None:
    service.create_workspace("busy-ws", resource_group="busy")
    with service.open_workspace("busy-ws") as session:
        experiment = session.store.get_or_create_experiment("exp1")
        run = session.store.create_run(experiment.id, compute="local")
        session.store.set_run_status(run.id, RunStatus.QUEUED)  # NotStarted is not active for a worker
        session.store.set_run_status(run.id, RunStatus.PREPARING)
        session.store.set_run_status(run.id, RunStatus.RUNNING)
    with pytest.raises(InvalidStateError, match="still active") as info:
        service.delete_workspace("busy-ws")
    assert "modelbuilder run cancel" in (info.value.hint or "")
    with pytest.raises(InvalidStateError):
        service.delete_resource_group("busy")
    with service.open_workspace("busy-ws") as session:
        session.store.set_run_status(run.id, RunStatus.CANCEL_REQUESTED)
        session.store.set_run_status(run.id, RunStatus.CANCELED)
    deleted = service.delete_workspace("busy-ws")
    assert not workspace_folder(deleted).exists()


def test_resource_groups_list_with_their_workspaces() -> None:
    service.create_resource_group("empty-group")
    service.create_workspace("ws-one", resource_group="full-group")
    listed = {group.name: [w.name for w in held] for group, held in service.list_resource_groups()}
    assert listed == {"empty-group": [], "full-group": ["ws-one"]}
    with pytest.raises(AlreadyExistsError):
        service.create_resource_group("EMPTY-group")
