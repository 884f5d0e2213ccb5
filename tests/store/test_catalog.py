"""The machine's catalog of resource groups and workspaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelbuilder.errors import (
    AlreadyExistsError,
    InvalidNameError,
    InvalidParameterError,
    NotFoundError,
    ResourceGroupNotFoundError,
    SchemaVersionError,
    WorkspaceNotFoundError,
)
from modelbuilder.store import Catalog, catalog_path, open_workspace_store, workspace_folder


@pytest.fixture
def catalog() -> Catalog:
    return Catalog()


def test_catalog_lives_in_modelbuilder_home(catalog: Catalog, isolated_home: Path) -> None:
    assert catalog.path == catalog_path() == isolated_home / "catalog.db"
    assert catalog.path.is_file()


def test_create_workspace_with_defaults(catalog: Catalog, isolated_home: Path) -> None:
    ws = catalog.create_workspace("my-ws")
    folder = (isolated_home / "workspaces" / "my-ws").resolve()
    assert (ws.name, ws.resource_group, ws.region) == ("my-ws", "default", "local")
    assert ws.store_url == f"sqlite:///{folder / 'workspace.db'}"
    assert ws.artifact_root == str(folder / "artifacts")
    assert workspace_folder(ws) == folder
    assert catalog.get_workspace("my-ws") == ws == catalog.find_workspace("MY-WS")  # case-blind lookup
    assert [g.name for g in catalog.list_resource_groups()] == ["default"]  # created on first use
    with open_workspace_store(ws) as store:
        assert store.workspace == "my-ws"
        store.get_or_create_experiment("first")
    assert (folder / "workspace.db").is_file()


def test_workspace_names_are_unique_on_the_machine(catalog: Catalog) -> None:
    catalog.create_workspace("shared", resource_group="rg-a")
    for name in ("shared", "SHARED"):
        with pytest.raises(AlreadyExistsError) as info:
            catalog.create_workspace(name, resource_group="rg-b")
        assert "rg-a" in str(info.value) and "modelbuilder workspace delete shared" in (info.value.hint or "")
    assert catalog.find_resource_group("rg-b") is None  # nothing half-created


def test_missing_workspace(catalog: Catalog) -> None:
    assert catalog.find_workspace("ghost") is None
    with pytest.raises(WorkspaceNotFoundError) as info:
        catalog.get_workspace("ghost")
    assert "modelbuilder workspace create ghost" in (info.value.hint or "")
    with pytest.raises(WorkspaceNotFoundError):
        catalog.delete_workspace("ghost")


@pytest.mark.parametrize("name", ["ab", "w" * 34, "my_ws", "-ws", "ws/../x"])
def test_workspace_names_follow_the_rule(catalog: Catalog, name: str) -> None:
    with pytest.raises(InvalidNameError):
        catalog.create_workspace(name)
    assert catalog.list_workspaces() == []


def test_regions(catalog: Catalog, isolated_home: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="Region 'mars'"):
        catalog.create_workspace("ws-mars", region="mars")
    (isolated_home / "regions.json").write_text(
        json.dumps({"lab": {"storage_root": str(tmp_path / "lab"), "ray_address": "ray://127.0.0.1:10001"}})
    )
    ws = catalog.create_workspace("ws-lab", region="lab")
    assert (
        ws.region == "lab" and Path(ws.artifact_root) == (tmp_path / "lab" / "ws-lab" / "artifacts").resolve()
    )


def test_explicit_store_url(catalog: Catalog) -> None:
    ws = catalog.create_workspace("team", store_url="postgresql://mb:secret@db.example/mb")
    assert ws.store_url == "postgresql://mb:secret@db.example/mb"  # recorded, not connected to
    with pytest.raises(InvalidParameterError):
        catalog.create_workspace("broken", store_url="not a url")


def test_list_and_delete_workspaces(catalog: Catalog) -> None:
    for name, group in [("ws-b", "team"), ("ws-a", "team"), ("ws-c", "solo")]:
        catalog.create_workspace(name, resource_group=group)
    assert [w.name for w in catalog.list_workspaces()] == ["ws-a", "ws-b", "ws-c"]
    assert [w.name for w in catalog.list_workspaces("TEAM")] == ["ws-a", "ws-b"]
    deleted = catalog.delete_workspace("ws-b")
    assert deleted.name == "ws-b" and catalog.find_workspace("ws-b") is None
    assert catalog.find_resource_group("team") is not None  # the group stays


def test_delete_resource_group_cascades_and_reports(catalog: Catalog) -> None:
    catalog.create_workspace("ws-1", resource_group="doomed")
    catalog.create_workspace("ws-2", resource_group="doomed")
    catalog.create_workspace("ws-3", resource_group="kept")
    deletion = catalog.delete_resource_group("Doomed")
    assert deletion.resource_group.name == "doomed"
    assert [w.name for w in deletion.workspaces] == ["ws-1", "ws-2"]
    assert [w.name for w in catalog.list_workspaces()] == ["ws-3"]
    assert catalog.find_resource_group("doomed") is None
    with pytest.raises(ResourceGroupNotFoundError) as info:
        catalog.delete_resource_group("doomed")
    assert "modelbuilder resource-group list" in (info.value.hint or "")
    catalog.create_workspace("ws-1")  # the name is free again


def test_resource_groups(catalog: Catalog) -> None:
    created = catalog.create_resource_group("Team-A")
    assert catalog.get_resource_group("team-a") == created
    with pytest.raises(AlreadyExistsError):
        catalog.create_resource_group("TEAM-A")
    assert catalog.get_or_create_resource_group("team-a") == created
    assert catalog.get_or_create_resource_group("other").name == "other"
    with pytest.raises(ResourceGroupNotFoundError):
        catalog.get_resource_group("missing")
    with pytest.raises(InvalidNameError):
        catalog.create_resource_group("bad/name")
    assert [g.name for g in catalog.list_resource_groups()] == ["other", "Team-A"]


def test_catalog_persists_and_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    with Catalog(path) as first:
        first.create_workspace("persisted")
    with Catalog(path) as again:
        assert again.get_workspace("persisted").name == "persisted"
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'c0007'")
    conn.close()
    with pytest.raises(SchemaVersionError, match="catalog"):
        Catalog(path)
