"""``run show`` links to a portal only when one of this home runs; otherwise it says how to start one."""

from __future__ import annotations

import json

import pytest
from cli_runner import Cli

from modelbuilder.portal.identity import home_key
from modelbuilder.services import portal_links, workspaces


@pytest.fixture
def run_id() -> str:
    portal_links.forget()
    with workspaces.open_workspace() as session:
        experiment = session.store.get_or_create_experiment("flowers")
        return session.store.create_run(experiment.id).id


def test_run_show_without_a_portal_gives_no_link_and_the_fix(cli: Cli, run_id: str) -> None:
    shown = json.loads(cli("run", "show", run_id[:12], "--json").stdout)
    assert shown["portal_url"] is None
    assert shown["portal_url_reason"] == (
        f"No portal is running for MODELBUILDER_HOME {home_key()}; start one with: "
        "modelbuilder portal --workspace default"
    )
    text = cli("run", "show", run_id[:12]).stdout
    assert "start one with: modelbuilder portal --workspace default" in text
    assert "http://" not in text


def test_run_show_with_a_configured_portal_links_to_the_run(
    cli: Cli, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELBUILDER_PORTAL_URL", "http://portal.lab:9000")
    shown = json.loads(cli("run", "show", run_id[:12], "--json").stdout)
    assert shown["portal_url"] == f"http://portal.lab:9000/workspaces/default/runs/{run_id}"
    assert shown["portal_url_reason"] is None
