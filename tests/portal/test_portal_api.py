"""Every JSON endpoint of the portal, with its 404s: a message that names the object and a hint."""

from __future__ import annotations

import hashlib
import io

from fastapi.testclient import TestClient
from PIL import Image
from portal_fixtures import WORKSPACE, PortalWorld, colour_image, csrf_headers, png_bytes

from modelbuilder.entities import ProvisioningState, RunStatus

API = f"/api/workspaces/{WORKSPACE}"


def assert_error(response, status: int, *words: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "hint"}
    assert body["hint"], body
    for word in words:
        assert word in body["error"], (word, body)
    return body


def test_health_names_the_service_and_workspace(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["service"] == "modelbuilder-portal"
    assert body["workspace"] == WORKSPACE
    assert isinstance(body["pid"], int)


def test_catalog_endpoints(client: TestClient, world: PortalWorld) -> None:
    world.catalog.create_workspace("other-ws", resource_group="team-b")
    run_id = world.completed_run("flowers")
    world.start_run("birds")

    groups = client.get("/api/resource-groups").json()
    assert [(g["name"], [w["name"] for w in g["workspaces"]]) for g in groups] == [
        ("default", [WORKSPACE]),
        ("team-b", ["other-ws"]),
    ]
    assert [w["name"] for w in client.get("/api/workspaces").json()] == ["other-ws", WORKSPACE]

    detail = client.get(API).json()
    assert detail["resource_group"] == "default" and detail["region"] == "local"
    assert [e["name"] for e in detail["experiments"]] == ["birds", "flowers"]

    experiments = {e["name"]: e for e in client.get(f"{API}/experiments").json()}
    assert experiments["flowers"]["run_count"] == 1  # trials are child runs: not counted
    assert experiments["flowers"]["latest_run"]["id"] == run_id
    assert experiments["flowers"]["latest_run"]["accuracy"] == 0.8333
    assert experiments["birds"]["latest_run"]["status"] == "Running"

    one = client.get(f"{API}/experiments/flowers").json()
    assert one["url"] == f"/workspaces/{WORKSPACE}/experiments/flowers"
    assert one["latest_run"]["backbone"] == "resnet50"
    assert client.get("/api/workspaces/other-ws/experiments").json() == []


def test_unknown_workspace_experiment_run_compute_are_404_with_messages(
    client: TestClient, world: PortalWorld
) -> None:
    body = assert_error(client.get("/api/workspaces/nope-ws"), 404, "nope-ws")
    assert "modelbuilder workspace" in body["hint"]
    assert_error(client.get(f"{API}/experiments/nope"), 404, "nope")
    assert_error(client.get(f"{API}/experiments/nope/runs"), 404, "nope")
    body = assert_error(client.get(f"{API}/runs/0123456789abcdef"), 404, "0123456789abcdef")
    assert "run list" in body["hint"]
    for suffix in ("children", "metrics", "logs", "log.txt", "artifacts", "evaluation", "thumbnail?path=x"):
        assert_error(client.get(f"{API}/runs/0123456789abcdef/{suffix}"), 404, "0123456789abcdef")
    assert_error(client.get(f"{API}/computes/nope"), 404, "nope")
    assert_error(client.get("/api/no-such-endpoint"), 404, "/api/no-such-endpoint")
    assert_error(client.get(f"{API}/compare?run=0123456789abcdef&run=fedcba9876543210"), 404)


def test_run_list_pages_and_sorts(client: TestClient, world: PortalWorld) -> None:
    experiment = world.store.get_or_create_experiment("many")
    ids = []
    for i in range(7):
        run = world.store.create_run(experiment.id, compute="local", params={"architecture": "resnet50"})
        world.store.log_metrics(run.id, [("accuracy", (i * 3 % 7) / 10, 0, None)])
        ids.append(run.id)
    page = client.get(f"{API}/experiments/many/runs?limit=3&offset=0").json()
    assert page["total"] == 7 and page["limit"] == 3 and page["order_by"] == "created_at desc"
    assert [r["id"] for r in page["items"]] == ids[::-1][:3]
    last = client.get(f"{API}/experiments/many/runs?limit=3&offset=6").json()
    assert [r["id"] for r in last["items"]] == [ids[0]]
    by_accuracy = client.get(f"{API}/experiments/many/runs", params={"order_by": "accuracy desc"}).json()
    scores = [r["accuracy"] for r in by_accuracy["items"]]
    assert scores == sorted(scores, reverse=True) and by_accuracy["order_by"] == "metric.accuracy desc"
    metric = client.get(f"{API}/experiments/many/runs", params={"order_by": "metric.accuracy asc"}).json()
    assert [r["accuracy"] for r in metric["items"]] == sorted(scores)
    assert_error(client.get(f"{API}/experiments/many/runs", params={"order_by": "colour"}), 400, "colour")
    assert_error(client.get(f"{API}/experiments/many/runs?limit=501"), 422, "limit")
    assert_error(client.get(f"{API}/experiments/many/runs?offset=-1"), 422, "offset")


def test_run_detail_while_running(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run(trials=2, time_budget=600)
    detail = client.get(f"{API}/runs/{run_id}").json()
    assert detail["status"] == "Running" and detail["is_active"] and detail["can_cancel"]
    assert detail["phase"] == "trial 2"
    assert detail["time_budget_s"] == 600
    assert 590 <= detail["remaining_s"] <= 600
    assert detail["progress"] == 0.5
    assert detail["child_count"] == 2
    assert detail["params"]["architecture"] == "resnet50"
    assert detail["has_results"] is False
    children = client.get(f"{API}/runs/{run_id}/children").json()
    assert [c["name"] for c in children] == ["trial-1", "trial-2"]
    best = [c for c in children if c["is_best"]]
    assert [c["name"] for c in best] == ["trial-2"] and detail["best_child_id"] == best[0]["id"]
    assert children[1]["best_val_accuracy"] == 0.9 and children[1]["epochs"] == 3
    # An id prefix works as in the CLI.
    assert client.get(f"{API}/runs/{run_id[:10]}").json()["id"] == run_id


def test_best_trial_named_by_the_run_wins(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run(trials=2, params={"best_trial": "trial-1"})
    children = client.get(f"{API}/runs/{run_id}/children").json()
    assert [c["name"] for c in children if c["is_best"]] == ["trial-1"]


def test_metrics_and_logs(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run(trials=1)
    child = client.get(f"{API}/runs/{run_id}/children").json()[0]["id"]
    histories = client.get(f"{API}/runs/{child}/metrics").json()
    assert set(histories) == {"train_accuracy", "val_accuracy", "train_loss", "val_loss"}
    assert [p["step"] for p in histories["val_accuracy"]] == [1, 2, 3]

    tail = client.get(f"{API}/runs/{run_id}/logs?offset=-5").json()
    assert tail["total"] == 30 and len(tail["lines"]) == 5 and tail["next_offset"] == 30
    assert tail["lines"][-1]["text"].endswith("training line 29")
    assert client.get(f"{API}/runs/{run_id}/logs?offset=30").json()["lines"] == []
    world.store.log_lines(run_id, ["new line"])
    new = client.get(f"{API}/runs/{run_id}/logs?offset=30").json()
    assert [line["text"] for line in new["lines"]] == ["new line"] and new["next_offset"] == 31

    text = client.get(f"{API}/runs/{run_id}/log.txt")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "attachment" in text.headers["content-disposition"]
    assert text.text.splitlines()[-1] == "new line" and len(text.text.splitlines()) == 31


def test_cancel_goes_through_the_same_service_as_the_cli(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run()
    world.record_live_worker(run_id)
    headers = csrf_headers(client.app)
    answer = client.post(f"{API}/runs/{run_id}/cancel", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["run"]["status"] == "CancelRequested"
    assert world.store.get_run(run_id).status is RunStatus.CANCEL_REQUESTED
    assert client.get(f"{API}/runs/{run_id}").json()["can_cancel"] is False
    again = client.post(f"{API}/runs/{run_id}/cancel", headers=headers)
    assert again.status_code == 200 and "already" in again.json()["message"]
    trial = client.get(f"{API}/runs/{run_id}/children").json()[0]
    assert trial["status"] == "Completed"
    world.store.create_run(
        world.store.get_run(run_id).experiment_id, parent_run_id=run_id, status=RunStatus.RUNNING
    )
    active_trial = [c for c in client.get(f"{API}/runs/{run_id}/children").json() if c["is_active"]][0]
    assert client.get(f"{API}/runs/{active_trial['id']}").json()["can_cancel"] is False
    body = assert_error(client.post(f"{API}/runs/{active_trial['id']}/cancel", headers=headers), 409, "trial")
    assert f"modelbuilder run cancel {run_id[:12]}" in body["hint"]
    world.store.set_run_status(run_id, RunStatus.CANCELED)
    assert_error(client.post(f"{API}/runs/{run_id}/cancel", headers=headers), 409, "Canceled")
    assert_error(client.post(f"{API}/runs/0123456789abcdef/cancel", headers=headers), 404)


def test_cancel_of_a_run_without_a_live_worker_ends_it(client: TestClient, world: PortalWorld) -> None:
    headers = csrf_headers(client.app)
    experiment = world.store.get_or_create_experiment("flowers")
    waiting = world.store.create_run(experiment.id, compute="local")  # NotStarted: nobody took it
    answer = client.post(f"{API}/runs/{waiting.id}/cancel", headers=headers)
    assert answer.status_code == 200 and answer.json()["run"]["status"] == "Canceled"
    orphan = world.start_run()  # Running, but no worker runs it (it died, or never was recorded)
    answer = client.post(f"{API}/runs/{orphan}/cancel", headers=headers)
    assert answer.status_code == 200 and answer.json()["run"]["status"] == "Canceled"
    assert world.store.get_run(orphan).status is RunStatus.CANCELED


def test_artifacts_list_and_download(client: TestClient, world: PortalWorld) -> None:
    run_id = world.completed_run()
    files = client.get(f"{API}/runs/{run_id}/artifacts").json()
    assert [f["path"] for f in files] == [
        "MLModel.zip",
        "bestModel.onnx",
        "bestModelMap.json",
        "Flowers.Model.zip",
        "Flowers.ConsoleApp.zip",
        "evaluation.json",
        "logs/run.log",
    ]
    assert {f["kind"] for f in files} == {"bundle", "model", "label_map", "code", "evaluation", "log"}
    for entry in files:
        download = client.get(entry["url"])
        assert download.status_code == 200, entry
        assert hashlib.sha256(download.content).hexdigest() == entry["sha256"]
        assert "attachment" in download.headers["content-disposition"]
    assert_error(client.get(f"{API}/runs/{run_id}/artifacts/nothing.bin"), 404, "nothing.bin")


def test_evaluation_items_and_thumbnails(client: TestClient, world: PortalWorld) -> None:
    run_id = world.completed_run()
    evaluation = client.get(f"{API}/runs/{run_id}/evaluation").json()
    assert evaluation["accuracy"] == evaluation["macro_accuracy"] == 10 / 12
    assert evaluation["confusion_matrix"]["labels"] == ["red", "green", "blue"]
    assert evaluation["confusion_matrix"]["matrix"] == [[2, 2, 0], [0, 4, 0], [0, 0, 4]]
    assert [c["label"] for c in evaluation["per_class"]] == ["red", "green", "blue"]
    assert evaluation["validation_item_count"] == 12
    wrong = evaluation["most_confidently_wrong"]
    assert [(w["true_label"], w["predicted_label"]) for w in wrong] == [("red", "green")] * 2

    cell = client.get(
        evaluation["items_url"], params={"true_label": "red", "predicted_label": "green"}
    ).json()
    assert cell["total"] == 2 and {i["path"].rsplit("/", 1)[-1] for i in cell["items"]} == {
        "red_0.png",
        "red_1.png",
    }
    row = client.get(evaluation["items_url"], params={"true_label": "red"}).json()
    assert row["total"] == 4
    assert client.get(evaluation["items_url"], params={"limit": 5, "offset": 10}).json()["total"] == 12

    thumb = client.get(cell["items"][0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.format == "JPEG" and max(image.size) <= 160
        assert image.getpixel((5, 5))[0] > 200  # the red image, resized
    small = client.get(cell["items"][0]["thumbnail_url"].replace("size=160", "size=32"))
    with Image.open(io.BytesIO(small.content)) as image:
        assert max(image.size) == 32
    assert len(client.app.state.portal.thumbnails) == 2  # type: ignore[attr-defined]
    assert client.get(cell["items"][0]["thumbnail_url"]).content == thumb.content  # from the cache
    assert_error(client.get(f"{API}/runs/{run_id}/thumbnail", params={"size": 2000, "path": "x"}), 422)


def test_thumbnails_of_relative_paths_come_from_the_run_data(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run()
    world.write_results(run_id, relative_paths=True)
    world.complete_run(run_id)
    items = client.get(f"{API}/runs/{run_id}/evaluation/items").json()["items"]
    assert items[0]["path"] == "red/red_0.png"
    assert client.get(items[0]["thumbnail_url"]).status_code == 200
    (world.data_dir / "red" / "red_0.png").unlink()
    assert_error(client.get(items[0]["thumbnail_url"]), 404, "no longer")


def test_evaluation_missing_is_404_with_hint(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run()
    body = assert_error(client.get(f"{API}/runs/{run_id}/evaluation"), 404, "no evaluation", "Running")
    assert "written when training ends" in body["hint"]
    assert_error(client.get(f"{API}/runs/{run_id}/evaluation/items"), 404)


def test_predict_with_the_run_model(client: TestClient, world: PortalWorld) -> None:
    run_id = world.completed_run()
    for label in ("red", "green", "blue"):
        answer = client.post(
            f"{API}/runs/{run_id}/predict",
            files={"file": (f"{label}.png", png_bytes(colour_image(label)), "image/png")},
            headers=csrf_headers(client.app),
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["prediction"] == label and body["labels"] == ["red", "green", "blue"]
        assert body["ranked"][0] == {"label": label, "score": max(body["score"])}
        assert abs(sum(body["score"]) - 1) < 1e-6 and body["image_format"] == "PNG"
    jpeg = io.BytesIO()
    colour_image("green").save(jpeg, "JPEG")
    answer = client.post(
        f"{API}/runs/{run_id}/predict",
        files={"file": ("photo.jpg", jpeg.getvalue(), "image/jpeg")},
        headers=csrf_headers(client.app),
    )
    assert answer.json()["prediction"] == "green" and answer.json()["image_format"] == "JPEG"


def test_predict_without_a_model_is_404(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run()
    answer = client.post(
        f"{API}/runs/{run_id}/predict",
        files={"file": ("a.png", png_bytes(colour_image("red")), "image/png")},
        headers=csrf_headers(client.app),
    )
    assert_error(answer, 404, "MLModel.zip")


def test_computes_and_sizes(client: TestClient, world: PortalWorld) -> None:
    world.store.create_compute(
        "gpu-1",
        size="Standard_NC12",
        backend="local",
        state=ProvisioningState.FAILED,
        error="needs 2 GPUs, this machine has 0",
    )
    world.store.create_compute("local", size="local", backend="local", state=ProvisioningState.SUCCEEDED)
    computes = {c["name"]: c for c in client.get(f"{API}/computes").json()}
    failed = computes["gpu-1"]
    assert failed["state"] == "Failed" and failed["error"] == "needs 2 GPUs, this machine has 0"
    assert (
        failed["spec"]["vcpus"] == 12 and failed["spec"]["gpus"] == 2 and failed["spec"]["memory_gib"] == 112
    )
    assert len(failed["fixes"]) == 2
    assert "another name" in failed["fixes"][0] and "modelbuilder compute delete gpu-1" in failed["fixes"][1]
    assert computes["local"]["fixes"] == [] and computes["local"]["state"] == "Succeeded"
    assert client.get(f"{API}/computes/gpu-1").json() == failed
    sizes = {s["name"]: s for s in client.get("/api/compute-sizes").json()}
    nc24 = sizes["Standard_NC24"]
    assert (nc24["vcpus"], nc24["memory_gib"], nc24["temp_storage_gib"], nc24["gpus"]) == (24, 224, 1440, 4)
    assert (nc24["gpu_memory_gib"], nc24["max_data_disks"], nc24["max_nics"]) == (48, 64, 4)


def test_compare_runs(client: TestClient, world: PortalWorld) -> None:
    first = world.completed_run(params={"seed": 1})
    second = world.completed_run(params={"seed": 2})
    body = client.get(f"{API}/compare", params=[("run", first), ("run", second)]).json()
    assert [r["id"] for r in body["runs"]] == [first, second]
    params = {row["key"]: row for row in body["params"]}
    assert params["seed"]["values"] == [1, 2] and params["seed"]["differs"]
    assert params["architecture"]["differs"] is False
    metrics = {row["key"]: row for row in body["metrics"]}
    assert metrics["accuracy"]["values"] == [0.8333, 0.8333]
    assert_error(client.get(f"{API}/compare", params={"run": first}), 400, "two to four")


def test_openapi_documents_every_api_endpoint(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    run = "/api/workspaces/{workspace}/runs/{run_id}"
    expected = {
        "/api/health",
        "/api/resource-groups",
        "/api/workspaces",
        "/api/workspaces/{workspace}",
        "/api/workspaces/{workspace}/experiments",
        "/api/workspaces/{workspace}/experiments/{experiment}",
        "/api/workspaces/{workspace}/experiments/{experiment}/runs",
        "/api/workspaces/{workspace}/compare",
        "/api/workspaces/{workspace}/computes",
        "/api/workspaces/{workspace}/computes/{name}",
        "/api/workspaces/{workspace}/computes/{name}/resources",
        "/api/compute-sizes",
        run,
        *(f"{run}/{tail}" for tail in ("children", "metrics", "logs", "log.txt", "cancel", "artifacts")),
        *(f"{run}/{tail}" for tail in ("artifacts/{path}", "evaluation", "evaluation/items", "thumbnail")),
        f"{run}/predict",
        # The new-run flow (tests/portal/test_wizard_*.py).
        "/api/data-roots",
        "/api/data-roots/{index}/folders",
        "/api/workspaces/{workspace}/datasets",
        "/api/workspaces/{workspace}/data/preview",
        "/api/workspaces/{workspace}/data/thumbnail",
        "/api/workspaces/{workspace}/compute-names/check",
        "/api/workspaces/{workspace}/train/estimate",
        "/api/workspaces/{workspace}/train",
    }
    assert paths == expected
    assert all(not p.startswith("/workspaces") for p in paths)  # pages are not part of the API
    docs = client.get("/api-docs")
    assert docs.status_code == 200 and f"{run}/predict" in docs.text
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN
