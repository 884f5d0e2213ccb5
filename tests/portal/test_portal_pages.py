"""The HTML pages: what each shows, escaping, CSP-friendliness, and errors as pages."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from portal_fixtures import WORKSPACE, PortalWorld

from modelbuilder.entities import ProvisioningState, RunError, RunStatus
from modelbuilder.store import lifecycle

PAGES = f"/workspaces/{WORKSPACE}"
HTML = {"Accept": "text/html"}


def _no_inline_code(html: str) -> None:
    """The pages must work under ``script-src 'self'; style-src 'self'``: no inline scripts or styles."""
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\sstyle=", html), "inline style attribute"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert "<style" not in html


def test_home_lists_groups_workspaces_experiments(client: TestClient, world: PortalWorld) -> None:
    world.catalog.create_workspace("lab-ws", resource_group="lab")
    run_id = world.completed_run("flowers")
    html = client.get("/", headers=HTML).text
    _no_inline_code(html)
    html = html[html.index("<main>") :]
    assert html.index("default") < html.index(WORKSPACE) < html.index("lab-ws")
    assert f'href="{PAGES}/experiments/flowers"' in html and f'href="{PAGES}/runs/{run_id}"' in html
    assert "Completed" in html and "83.3%" in html
    assert "No experiments yet" in html  # lab-ws is empty


def test_home_without_workspaces_says_how_to_make_one(client: TestClient, world: PortalWorld) -> None:
    world.catalog.delete_workspace(WORKSPACE)
    world.catalog.delete_resource_group("default")
    html = client.get("/").text
    assert "No workspaces on this machine yet" in html and "modelbuilder workspace create portal-ws" in html


def test_workspace_page(client: TestClient, world: PortalWorld) -> None:
    world.start_run("birds")
    html = client.get(PAGES).text
    assert "birds" in html and "Running" in html and f"{PAGES}/computes" in html


def test_experiment_page_paginates_and_sorts(client: TestClient, world: PortalWorld) -> None:
    experiment = world.store.get_or_create_experiment("many")
    for i in range(120):
        run = world.store.create_run(experiment.id, name=f"run-{i:03d}", params={"architecture": "effnet"})
        world.store.log_metrics(run.id, [("accuracy", i / 200, 0, None)])
    first = client.get(f"{PAGES}/experiments/many").text
    _no_inline_code(first)
    assert first.count('name="run"') == 50 and "page 1 of 3" in first and "Runs 1–50 of 120" in first
    assert first.index("run-119") < first.index("run-118")  # newest first
    last = client.get(f"{PAGES}/experiments/many?page=3").text
    assert last.count('name="run"') == 20 and "run-000" in last
    by_accuracy = client.get(f"{PAGES}/experiments/many?sort=accuracy&dir=asc").text
    assert by_accuracy.index("run-000") < by_accuracy.index("run-001") and "0.0%" in by_accuracy
    assert 'href="?sort=accuracy&dir=desc"' in by_accuracy  # clicking again flips the order
    assert "effnet" in first
    bad = client.get(f"{PAGES}/experiments/many?sort=colour", headers=HTML)
    assert bad.status_code == 400 and "cannot sort by" in bad.text and "Hint:" in bad.text


def test_run_page_while_running(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run(trials=2)
    html = client.get(f"{PAGES}/runs/{run_id}").text
    _no_inline_code(html)
    assert 'id="run-status">Running<' in html and 'id="cancel-button" class="danger">' in html
    assert 'id="results-card" hidden' in html
    assert "trial-1" in html and "trial-2" in html and '<span class="badge best-badge">best</span>' in html
    assert html.count("<polyline") == 8  # 2 trials x (train, val) x (accuracy, loss)
    assert "training line 29" in html and 'data-next="30"' in html
    assert re.search(r'id="run-remaining">(10m 00s|9m 5\ds)<', html)  # of the 10-minute budget
    # A run id prefix redirects to the canonical address.
    moved = client.get(f"{PAGES}/runs/{run_id[:8]}", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == f"{PAGES}/runs/{run_id}"


def test_run_page_when_completed(client: TestClient, world: PortalWorld) -> None:
    run_id = world.completed_run()
    html = client.get(f"{PAGES}/runs/{run_id}").text
    _no_inline_code(html)
    assert 'id="cancel-button" class="danger" hidden' in html and 'id="results-card" hidden' not in html
    assert 'id="confusion-matrix"' in html and html.count('class="cm-cell') == 9
    assert 'data-true="red" data-predicted="green" data-count="2"' in html
    assert html.count("disabled>0</button>") == 5  # empty cells cannot be clicked
    for name in (
        "MLModel.zip",
        "bestModel.onnx",
        "bestModelMap.json",
        "Flowers.Model.zip",
        "Flowers.ConsoleApp.zip",
    ):
        assert f'data-path="{name}"' in html
    assert 'id="try-zone"' in html and 'id="try-file"' in html
    assert html.count('<figure class="thumb wrong">') == 2


def test_fragments_for_live_updates(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run(trials=1)
    trials = client.get(f"{PAGES}/runs/{run_id}/_trials").text
    assert "<html" not in trials and "<svg" in trials and "trial-1" in trials
    results = client.get(f"{PAGES}/runs/{run_id}/_results").text
    assert "has no evaluation" in results and "Running" in results and 'id="try-zone"' not in results
    assert "/log.txt" in results  # the log comes from the store while there is no log file
    world.write_results(run_id)
    world.complete_run(run_id)
    results = client.get(f"{PAGES}/runs/{run_id}/_results").text
    assert 'id="confusion-matrix"' in results and 'id="try-zone"' in results
    assert "/log.txt" not in results  # logs/run.log is an artifact now


def test_failed_run_shows_its_error_and_hint(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run()
    lifecycle.fail(world.store, run_id, RunError("DatasetError", "No images in 'x'.", "Add images."))
    html = client.get(f"{PAGES}/runs/{run_id}").text
    assert '<div id="run-error-message">Error: No images in &#39;x&#39;.</div>' in html
    assert '<div id="run-error-hint">Hint: Add images.</div>' in html
    assert "has no evaluation (Failed)" in html


def test_a_lost_run_shows_failed_process_lost(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run()
    lifecycle.mark_lost(world.store, run_id, "worker pid 1 on this host is gone")
    html = client.get(f"{PAGES}/runs/{run_id}").text
    assert ">Failed (process lost)</span>" in html and "Error: process lost: worker pid 1" in html
    assert "Hint: Continue it from its last checkpoint: modelbuilder train --resume" in html


def test_user_text_is_escaped(client: TestClient, world: PortalWorld) -> None:
    evil = "<img src=x onerror=alert(1)>"
    run_id = world.start_run(params={"architecture": evil})
    experiment = world.store.get_run(run_id).experiment_id
    world.store.create_run(experiment, parent_run_id=run_id, name=evil, status=RunStatus.RUNNING)
    evaluation = {
        "accuracy": 1.0,
        "per_class": [{"label": evil, "precision": 1, "recall": 1, "f1": 1, "support": 1}],
        "confusion_matrix": {"labels": [evil], "matrix": [[1]]},
        "validation_items": [{"path": "a.png", "true_label": evil, "predicted_label": evil, "score": 1.0}],
    }
    world.artifacts.put_bytes(run_id, json.dumps(evaluation).encode(), "evaluation.json")
    world.complete_run(run_id)
    for url in (
        f"{PAGES}/runs/{run_id}",
        f"{PAGES}/runs/{run_id}/_trials",
        f"{PAGES}/runs/{run_id}/_results",
    ):
        html = client.get(url).text
        assert evil not in html, url
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, url


def test_compare_page_highlights_differences(client: TestClient, world: PortalWorld) -> None:
    first = world.completed_run(params={"seed": 1})
    second = world.completed_run(params={"seed": 2})
    html = client.get(f"{PAGES}/compare?run={first}&run={second}").text
    _no_inline_code(html)
    assert re.search(r'<tr class="differs"><th>seed</th><td>1</td><td>2</td>', html)
    assert re.search(r"<tr><th>architecture</th><td>resnet50</td><td>resnet50</td>", html)
    assert client.get(f"{PAGES}/compare?run={first}", headers=HTML).status_code == 400


def test_computes_page_shows_specs_failures_and_fixes(client: TestClient, world: PortalWorld) -> None:
    world.store.create_compute(
        "gpu-1", size="Standard_NC24", backend="local", state=ProvisioningState.FAILED, error="needs 4 GPUs"
    )
    world.store.create_compute(
        "cpu-1", size="Standard_F4s_v2", backend="local", state=ProvisioningState.SUCCEEDED
    )
    html = client.get(f"{PAGES}/computes").text
    _no_inline_code(html)
    assert (
        "24 vCPU · 224 GiB memory · 1440 GiB temp SSD" in html
        and "4 × NVIDIA Tesla K80 (48 GiB GPU memory)" in html
    )
    assert "64 data disks · 4 NICs" in html
    assert "needs 4 GPUs" in html and "modelbuilder compute delete gpu-1" in html
    assert "modelbuilder compute create NEW-NAME --size Standard_NC24" in html
    assert html.count("Provisioning failed") == 1


def test_a_compute_shows_the_name_of_its_token_variable_never_the_token(
    client: TestClient, world: PortalWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "tok-31c9-never-shown"
    monkeypatch.setenv("MB_TEST_CLUSTER_TOKEN", secret)
    world.store.create_compute(
        "ray-t", size="Standard_F2s_v2", backend="ray", address="http://10.0.0.5:8265",
        state=ProvisioningState.SUCCEEDED, token_ref="MB_TEST_CLUSTER_TOKEN",
    )  # fmt: skip
    world.store.create_compute("cpu-1", size="Standard_F4s_v2", backend="local")
    html = client.get(f"{PAGES}/computes").text
    assert html.count("token from <code>$MB_TEST_CLUSTER_TOKEN</code>") == 1 and secret not in html
    api = client.get(f"/api{PAGES}/computes").json()
    tokens = {c["name"]: c["token_env"] for c in api}
    assert tokens["ray-t"] == "MB_TEST_CLUSTER_TOKEN" and tokens["cpu-1"] is None
    one = client.get(f"/api{PAGES}/computes/ray-t")
    assert one.json()["token_env"] == "MB_TEST_CLUSTER_TOKEN" and secret not in one.text


def test_errors_are_pages_for_browsers(client: TestClient, world: PortalWorld) -> None:
    for url in (f"{PAGES}/runs/0123456789abcdef", "/workspaces/nope-ws/computes", "/nothing/here"):
        response = client.get(url, headers=HTML)
        assert response.status_code == 404, url
        assert response.headers["content-type"].startswith("text/html")
        assert "<h1>404" in response.text and "Back to the home page" in response.text
    assert "Hint:" in client.get("/workspaces/nope-ws/computes", headers=HTML).text
    api = client.get(f"/api{PAGES}/runs/0123456789abcdef", headers=HTML)
    assert api.headers["content-type"] == "application/json"  # the API always answers JSON


def test_static_assets_are_served_locally(client: TestClient) -> None:
    for name in ("portal.css", "portal.js", "run.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and len(response.content) > 500
    html = client.get("/").text
    assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html
