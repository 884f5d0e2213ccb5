"""``modelbuilder resource-group`` and ``modelbuilder workspace``: create/list/show/delete, --json, rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import Cli

from modelbuilder.store import sqlite_file_url


def test_workspace_create_list_show_delete(cli: Cli, isolated_home: Path) -> None:
    created = cli("workspace", "create", "vision-ws", "--resource-group", "team-a", "--json")
    assert created.exit_code == 0, created.stderr
    view = json.loads(created.stdout)
    assert (view["name"], view["resource_group"], view["region"]) == ("vision-ws", "team-a", "local")
    assert view["store_url"].startswith("sqlite:///") and view["artifact_root"].endswith("artifacts")

    listed = json.loads(cli("workspace", "list", "--json").stdout)
    assert [w["name"] for w in listed] == ["vision-ws"]
    assert "vision-ws" in cli("workspace", "list").stdout

    shown = cli("workspace", "show", "--workspace", "vision-ws", "--json")
    assert json.loads(shown.stdout) == view
    assert "team-a" in cli("workspace", "show", "vision-ws").stdout

    kept = cli("workspace", "delete", "vision-ws", input="n\n")
    assert kept.exit_code == 1 and "Nothing deleted" in kept.stderr
    deleted = cli("workspace", "delete", "vision-ws", "--yes")
    assert deleted.exit_code == 0 and "Deleted workspace 'vision-ws'" in deleted.stderr
    assert not (isolated_home / "workspaces" / "vision-ws").exists()
    assert json.loads(cli("workspace", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("ab", False, id="2-chars"),
        pytest.param("abc", True, id="3-chars"),
        pytest.param("w" * 33, True, id="33-chars"),
        pytest.param("w" * 34, False, id="34-chars"),
        pytest.param("bad_name", False, id="underscore"),
        pytest.param("-abc", False, id="leading-hyphen"),
    ],
)
def test_workspace_name_rule_at_the_boundaries(cli: Cli, name: str, ok: bool) -> None:
    result = cli("workspace", "create", "--", name)  # "--": "-abc" is a name, not an option
    assert result.exit_code == (0 if ok else 1)
    if not ok:
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith(f"Error: The workspace name '{name}'")
        assert (
            lines[1] == "Hint: Choose a workspace name of 3-33 characters: letters, digits and hyphens, "
            "starting with a letter or digit."
        )
        assert len(lines) == 2 and "Traceback" not in result.stderr


def test_workspace_with_a_store_url(cli: Cli, tmp_path: Path) -> None:
    url = sqlite_file_url(tmp_path / "shared" / "meta.db")
    result = cli("workspace", "create", "shared-ws", "--store", url, "--json")
    assert json.loads(result.stdout)["store_url"] == url
    assert (tmp_path / "shared" / "meta.db").is_file()
    bad = cli("workspace", "create", "bad-store", "--store", "::nonsense::")
    assert bad.exit_code == 1 and "Hint: Use sqlite:////" in bad.stderr


def test_unknown_region_and_workspace(cli: Cli) -> None:
    region = cli("workspace", "create", "far-away", "--region", "mars")
    assert region.exit_code == 1 and "Region 'mars' is not defined" in region.stderr
    missing = cli("experiment", "list", "--workspace", "nope-ws")
    assert missing.exit_code == 1
    assert missing.stderr.splitlines() == [
        "Error: Workspace 'nope-ws' not found on this machine.",
        "Hint: Create it with: modelbuilder workspace create nope-ws, or list workspaces with: "
        "modelbuilder workspace list",
    ]


def test_resource_group_lifecycle_with_cascade(cli: Cli, isolated_home: Path) -> None:
    assert cli("resource-group", "create", "empty-rg").exit_code == 0
    cli("workspace", "create", "ws-one", "-g", "team-rg")
    cli("workspace", "create", "ws-two", "-g", "team-rg")
    listed = json.loads(cli("resource-group", "list", "--json").stdout)
    assert listed == [
        {"name": "empty-rg", "created_at": listed[0]["created_at"], "workspaces": []},
        {"name": "team-rg", "created_at": listed[1]["created_at"], "workspaces": ["ws-one", "ws-two"]},
    ]
    shown = json.loads(cli("resource-group", "show", "--workspace", "ws-one", "--json").stdout)
    assert shown["name"] == "team-rg"
    assert "ws-one, ws-two" in cli("resource-group", "show", "team-rg").stdout

    refused = cli("resource-group", "delete", "team-rg", input="n\n")
    assert refused.exit_code == 1 and "ws-one, ws-two" in refused.stderr
    assert (isolated_home / "workspaces" / "ws-one").exists()
    deleted = cli("resource-group", "delete", "team-rg", input="y\n")
    assert deleted.exit_code == 0 and "2 workspace(s)" in deleted.stderr
    assert not (isolated_home / "workspaces" / "ws-one").exists()
    assert [w["name"] for w in json.loads(cli("workspace", "list", "--json").stdout)] == []
    gone = cli("resource-group", "show", "team-rg")
    assert gone.exit_code == 1 and gone.stderr.startswith("Error: Resource group 'team-rg' not found.")
    again = cli("resource-group", "create", "EMPTY-rg")
    assert again.exit_code == 1 and "already exists" in again.stderr
