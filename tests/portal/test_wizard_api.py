"""The Environment and Train steps' API: compute names checked as typed, computes created (an errored one
with its reason and fixes) and deleted, the estimate before training, and starting a run through the
CLI's service. Every state-changing endpoint needs the token and a same-origin request."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from portal_fixtures import BASE_URL, PortalWorld, csrf_headers
from wizard_fixtures import API, image_files, wizard_app, zip_bytes

from modelbuilder.portal.routers import wizard as wizard_routes


@pytest.fixture
def wclient(world: PortalWorld) -> Iterator[TestClient]:
    with TestClient(wizard_app([]), base_url=BASE_URL) as client:
        yield client


def _dataset(client: TestClient, files: dict[str, bytes] | None = None) -> str:
    response = client.post(f"{API}/datasets", headers=csrf_headers(client.app),
                           files={"archive": ("d.zip", zip_bytes(files or image_files(per_class=6)), "x")})
    assert response.status_code == 201, response.text
    return str(response.json()["source"])


@pytest.mark.parametrize("name, ok", [("gpu-1", True), ("ab", True), ("a" * 16, True), ("a", False),
                                      ("a" * 17, False), ("-gpu", False), ("gpu_1", False), ("local", False)])
def test_compute_names_are_checked_by_the_cli_rule(wclient: TestClient, name: str, ok: bool) -> None:
    body = wclient.get(f"{API}/compute-names/check", params={"name": name}).json()
    assert body["ok"] is ok, body
    if not ok:
        assert body["hint"]
    # The page checks as you type with the same rule, exported as a regex.
    typed = re.search(wizard_routes.COMPUTE_NAME_PATTERN, name) is not None
    assert typed == (ok or name == "local")  # 'local' follows the rule but exists


def test_create_an_errored_compute_and_fix_it(wclient: TestClient, world: PortalWorld) -> None:
    headers = csrf_headers(wclient.app)
    good = wclient.post(f"{API}/computes", json={"name": "cpu-1", "size": "Standard_D2s_v3"}, headers=headers)
    assert good.status_code == 201 and good.json()["state"] == "Succeeded", good.text
    bad = wclient.post(f"{API}/computes", json={"name": "gpu-1", "size": "Standard_NC12"}, headers=headers)
    assert bad.status_code == 201, bad.text
    failed = bad.json()
    assert failed["state"] == "Failed" and "GPU" in failed["error"]
    assert failed["fixes"] and any("delete" in fix for fix in failed["fixes"])
    again = wclient.post(f"{API}/computes", json={"name": "gpu-1", "size": "Standard_D2s_v3"},
                         headers=headers)
    assert again.status_code == 409 and "Failed" in again.json()["error"] and again.json()["hint"]
    assert not wclient.get(f"{API}/compute-names/check", params={"name": "gpu-1"}).json()["ok"]
    # Fix 1: another name. Fix 2: delete the errored one, which frees its name.
    assert wclient.post(f"{API}/computes", json={"name": "gpu-2", "size": "Standard_D2s_v3"},
                        headers=headers).status_code == 201
    assert wclient.delete(f"{API}/computes/gpu-1", headers=headers).status_code == 200
    assert wclient.get(f"{API}/compute-names/check", params={"name": "gpu-1"}).json()["ok"]
    bad_name = wclient.post(f"{API}/computes", json={"name": "x", "size": "Standard_D2s_v3"}, headers=headers)
    assert bad_name.status_code == 400 and "2 to 16" in bad_name.json()["error"]


def test_state_changing_endpoints_need_token_and_origin(wclient: TestClient, world: PortalWorld) -> None:
    token = wclient.app.state.portal.csrf_token  # type: ignore[attr-defined]
    wrong = [{}, {"Origin": "http://evil.example", "X-CSRF-Token": token}, {"Origin": BASE_URL}]
    for headers in wrong:
        assert wclient.post(f"{API}/computes", json={"name": "cpu-1", "size": "Standard_D2s_v3"},
                            headers=headers).status_code == 403
        assert wclient.delete(f"{API}/computes/local", headers=headers).status_code == 403
        assert wclient.post(f"{API}/train", json={"source": "dataset:0000000000000000"},
                            headers=headers).status_code == 403
    assert [c["name"] for c in wclient.get(f"{API}/computes").json()] == ["local"]


def test_estimate_before_training(wclient: TestClient) -> None:
    source = _dataset(wclient)
    response = wclient.get(f"{API}/train/estimate", params={"source": source, "time_budget": 60})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["images"] == 12 and body["validation_images"] >= 2
    assert body["resolution"] > 0 and body["feature_seconds"] > 0 and body["backbone"]
    assert body["trials"] and {"name", "status", "budget_s"} <= set(body["trials"][0])
    assert "No earlier run" in body["accuracy_method"] and body["accuracy_low"] is None
    longer = wclient.get(f"{API}/train/estimate", params={"source": source, "time_budget": 3600}).json()
    assert longer["resolution"] >= body["resolution"]


def test_start_training_uses_the_cli_service(wclient: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _dataset(wclient)
    calls: list[dict[str, Any]] = []

    class FakeRun:
        id, experiment, compute = "f" * 32, "uploads", "local"

        class status:  # noqa: N801 - mimics RunStatus.QUEUED
            value = "Queued"

    class FakeSubmission:
        run = FakeRun()
        worker = type("W", (), {"wait": staticmethod(lambda timeout=None: None)})()

    def fake_submit(session: Any, config: Any, **kwargs: Any) -> FakeSubmission:
        calls.append({"config": config, **kwargs})
        return FakeSubmission()

    monkeypatch.setattr(wizard_routes, "submit_training", fake_submit)
    body = {"source": source, "time_budget": 30, "on_bad_image": "fail", "compute": "local"}
    response = wclient.post(f"{API}/train", json=body, headers=csrf_headers(wclient.app))
    assert response.status_code == 201, response.text
    assert response.json()["url"].endswith(f"/runs/{'f' * 32}")
    config = calls[0]["config"]
    assert Path(config.data).is_dir() and config.time_budget == 30 and config.on_bad_image == "fail"
    # The dataset's folder is named by its hash; the run takes the upload's name (the zip's, here).
    assert calls[0]["experiment"] == "d-x" and config.name == "d" and calls[0]["compute"] == "local"


def test_training_is_refused_for_blocked_data_and_stop_on_bad_files(wclient: TestClient) -> None:
    headers = csrf_headers(wclient.app)
    one_label = _dataset(wclient, {k: v for k, v in image_files().items() if "label0" in k})
    refused = wclient.post(f"{API}/train", json={"source": one_label}, headers=headers)
    assert refused.status_code == 409 and "2 labels" in refused.json()["error"]
    files = image_files(per_class=6)
    files["label0/bad.png"] = b"not an image"
    with_bad = _dataset(wclient, files)
    stop = wclient.post(f"{API}/train", json={"source": with_bad, "on_bad_image": "fail"}, headers=headers)
    assert stop.status_code == 409 and "bad file" in stop.json()["error"]
    on_errored = wclient.post(f"{API}/train", json={"source": with_bad, "compute": "nope"}, headers=headers)
    assert on_errored.status_code == 404


def test_estimate_counts_images_whose_features_are_cached(wclient: TestClient) -> None:
    """A second run on the same data featurizes only what the feature cache lacks; the estimate says so."""
    import hashlib

    import numpy as np

    from modelbuilder.training.backbones import get_backbone_spec
    from modelbuilder.training.features import feature_cache_for

    files = image_files(per_class=6)
    source = _dataset(wclient, files)
    params = {"source": source, "time_budget": 60, "architecture": "test_tiny"}
    before = wclient.get(f"{API}/train/estimate", params=params).json()
    assert before["images"] == 12 and before["cached_images"] == 0
    assert "measured by a probe" in before["feature_method"]  # no earlier run: a live probe
    spec = get_backbone_spec("test_tiny")
    cache = feature_cache_for("test_tiny", "random", spec.preprocessing(before["resolution"]), "features")
    some = [hashlib.sha256(data).hexdigest() for data in list(files.values())[:5]]
    cache.add(some, np.zeros((5, 4), dtype=np.float32))
    after = wclient.get(f"{API}/train/estimate", params=params).json()
    assert after["cached_images"] == 5 and after["images"] == 7
    assert after["feature_seconds"] < before["feature_seconds"]


def test_accuracy_band_from_earlier_runs_on_the_same_data(wclient: TestClient, world: PortalWorld) -> None:
    from modelbuilder.entities import RunStatus
    from modelbuilder.services.datasets import get_dataset
    from modelbuilder.services.training_run import dataset_fingerprint
    from modelbuilder.services.workspaces import open_session

    source = _dataset(wclient)
    with open_session(world.workspace) as session:
        folder = get_dataset(session, source.partition(":")[2]).path
    experiment = world.store.get_or_create_experiment("uploads")
    for accuracy in (0.8, 0.9):
        run = world.store.create_run(experiment.id, compute="local", params={"data": str(folder)},
                                     dataset_fingerprint=dataset_fingerprint(folder), status=RunStatus.QUEUED)
        world.store.log_metrics(run.id, [("accuracy", accuracy, 0, None)])
        for status in (RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.FINALIZING, RunStatus.COMPLETED):
            world.store.set_run_status(run.id, status)
    body = wclient.get(f"{API}/train/estimate", params={"source": source, "time_budget": 60}).json()
    assert body["accuracy_low"] is not None and body["accuracy_low"] < 0.8
    assert 0.9 < body["accuracy_high"] <= 1.0
    assert "2 earlier completed runs" in body["accuracy_method"] and "80.0%–90.0%" in body["accuracy_method"]


def test_estimate_uses_the_speed_an_earlier_run_measured(wclient: TestClient, world: PortalWorld) -> None:
    import json

    source = _dataset(wclient)
    params = {"source": source, "time_budget": 60, "architecture": "test_tiny"}
    reference = wclient.get(f"{API}/train/estimate", params=params).json()
    # A completed run on this data whose plan measured a machine half as fast (a run on other data
    # decoded other images: its speed is not used, see test_wizard_estimate.py).
    from modelbuilder.entities import RunStatus
    from modelbuilder.services.datasets import get_dataset
    from modelbuilder.services.training_run import dataset_fingerprint
    from modelbuilder.services.workspaces import open_session

    with open_session(world.workspace) as session:
        folder = get_dataset(session, source.partition(":")[2]).path
    run_id = world.store.create_run(world.store.get_or_create_experiment("uploads").id, compute="local",
                                    dataset_fingerprint=dataset_fingerprint(folder),
                                    status=RunStatus.QUEUED).id
    for status in (RunStatus.PREPARING, RunStatus.RUNNING, RunStatus.FINALIZING, RunStatus.COMPLETED):
        world.store.set_run_status(run_id, status)
    plan = {"format_version": 1, "backbone": "test_tiny", "speed": 0.5, "feature_size": 32}
    world.artifacts.put_bytes(run_id, json.dumps(plan).encode(), "plan.json")
    slower = wclient.get(f"{API}/train/estimate", params=params).json()
    from modelbuilder.training.backbones import get_backbone_spec
    from modelbuilder.training.plan import feature_rate

    half = feature_rate(get_backbone_spec("test_tiny"), slower["resolution"], 0.5)
    assert reference["speed_source"] == "probe" and slower["speed_source"] == "run"
    assert slower["feature_rate"] == pytest.approx(half, rel=0.01)  # the run's speed, not the probe's
    assert slower["feature_seconds"] == pytest.approx(slower["overhead_seconds"] + slower["images"] / half,
                                                      rel=0.01)
    assert f"measured by run {run_id[:8]}" in slower["feature_method"]
    other = wclient.get(f"{API}/train/estimate", params={**params, "architecture": "efficientnet_lite0"})
    assert "measured by run" not in other.json().get("feature_method", "")
