"""The whole new-run flow in headless Chromium, as a new user would click it (issue 11's end-to-end test).

Open the portal, create a compute that fails (and see its reason and both fixes), fix it both ways, pick a
folder inside the data root, upload a zip of tiny images with one bad file (and the same images as a
folder: the same content-addressed dataset), see the preview report the bad file, read the estimate,
start a short real run (the ``test_tiny`` backbone), watch it complete on the live run page, open
Consume, download the Web API project, then install and run that Web API in a torch-free venv and predict
an image over HTTP: the same label and scores (within 1e-5) as ``PredictionEngine`` on the run's
MLModel.zip.

Marked ``portal`` and ``slow``; skipped without /usr/bin/chromium, Playwright, uvicorn or torch (and when
PyPI cannot be reached for the Web API's venv). Screenshots go to ``$MODELBUILDER_TEST_ARTIFACTS/wizard``
(default ``test-artifacts/wizard``, gitignored); the test prints where.
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

import browser
from factories import load_test_module, make_image_folder

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = "wizard-e2e"
TIME_BUDGET_S = 15

webapi = load_test_module("codegen/webapi_venv.py", "wizard_webapi_venv")

pytestmark = browser.real_run_marks(timeout_s=600)


def _screenshots() -> Path:
    folder = browser.screenshot_folder("wizard")
    print(f"Screenshots of the new-run flow: {folder}")
    return folder


def _data_zip(tmp_path: Path) -> Path:
    data = make_image_folder(tmp_path / "shapes", classes=3, per_class=10, size=32)
    (data / "label0" / "notes.png").write_text("these are notes, not an image")
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(data.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(tmp_path).as_posix())  # shapes/label0/... (a top folder)
    return archive


def test_new_run_in_the_browser_to_a_web_api_prediction(tmp_path: Path,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    from modelbuilder.pipeline import load_model
    from modelbuilder.portal import create_app
    from modelbuilder.workspace import Workspace

    shots = _screenshots()
    started = time.monotonic()
    archive = _data_zip(tmp_path)
    probe = tmp_path / "shapes" / "label1" / "label1_3.png"
    with Workspace.get_or_create(WORKSPACE):
        pass
    port = browser.free_port()
    app = create_app(WORKSPACE, host="127.0.0.1", port=port, data_roots=[tmp_path])
    with browser.serve_in_background(app, port) as base_url, browser.chromium_page() as page:
        page.goto(f"{base_url}/workspaces/{WORKSPACE}/new-run")
        page.wait_for_selector("#step-scenario")
        assert "not offered" in page.inner_text("#step-scenario")
        page.screenshot(path=str(shots / "1-scenario.png"), full_page=True)

        # Environment: a compute this machine cannot provision ends Failed, shown with both fixes.
        page.click("#create-compute summary")
        page.fill("#compute-name", "x")
        browser.wait_for(page, "document.getElementById('compute-name-status').textContent.includes('2–16')")
        page.fill("#compute-name", "gpu-1")
        browser.wait_for(page, "document.getElementById('compute-name-status').textContent.includes('free')")
        page.check("input[name=size][value=Standard_NC12]")
        page.click("#compute-create")
        page.wait_for_selector("tr.compute-failure[data-name=gpu-1] button.fix-delete")
        failure = page.inner_text("tr.compute-failure[data-name=gpu-1]")
        assert "could not be created" in failure and "GPU" in failure
        page.screenshot(path=str(shots / "2-errored-compute.png"), full_page=True)
        page.click("tr.compute-failure[data-name=gpu-1] button.fix-rename")
        assert page.input_value("#compute-name") == "gpu-1-2"
        browser.wait_for(page, "document.getElementById('compute-name-status').textContent.includes('free')")
        with page.expect_navigation():  # the page reloads once the compute is deleted
            page.click("tr.compute-failure[data-name=gpu-1] button.fix-delete")
        page.wait_for_selector("#compute-message .alert.ok")
        assert page.query_selector("tr.compute-failure[data-name=gpu-1]") is None
        page.check("input[name=compute][value=local]")

        # Data, the folder picker: only what is inside the data root; the preview checks the folder.
        page.click("#folder-list a.folder[data-path=shapes]")
        page.wait_for_selector("#folder-list a.folder[data-path='shapes/label0']")
        page.click("#use-folder")
        page.wait_for_selector("#preview-problems tr.problem-not_an_image")
        assert page.inner_text("#preview-source") == "folder:0:shapes"
        # Data, an upload: the zip becomes a dataset; the preview shows labels, thumbnails and the bad file.
        page.set_input_files("#zip-input", str(archive))
        browser.wait_for(page, "document.getElementById('preview-source').textContent.startsWith('dataset:')",
                       what="the preview of the uploaded dataset")
        assert "notes.png" in page.inner_text("#preview-problems")
        assert page.locator("#preview-thumbs .label-strip").count() == 3
        page.wait_for_selector("#preview-chart svg")
        page.screenshot(path=str(shots / "3-data-preview.png"), full_page=True)
        dataset = page.inner_text("#preview-source")
        # The same images as a folder (the page's folder input): the same content, so the same dataset.
        page.set_input_files("#folder-input", str(tmp_path / "shapes"))
        browser.wait_for(page,
                       "document.getElementById('data-message').textContent.includes('uploaded before')",
                       what="the folder upload to be recognised as the same dataset")
        assert page.inner_text("#preview-source") == dataset

        # Train: the estimate comes before the start.
        page.select_option("#architecture", "test_tiny")
        page.fill("#time-budget", str(TIME_BUDGET_S))
        page.click("#estimate-button")
        browser.wait_for(page, "document.querySelector('#estimate .estimate-features') !== null && "
                       f"document.querySelector('#estimate').textContent.includes('{TIME_BUDGET_S}s')",
                       timeout_s=90, what="the estimate (the first one imports the trainer's trials)")
        estimate_text = page.inner_text("#estimate")
        assert "featurized" in estimate_text and "Predicted accuracy" in estimate_text
        assert "null" not in estimate_text
        page.screenshot(path=str(shots / "4-estimate.png"), full_page=True)
        estimate = httpx.get(f"{base_url}/api/workspaces/{WORKSPACE}/train/estimate", params={
            "source": page.inner_text("#preview-source"), "time_budget": TIME_BUDGET_S,
            "architecture": "test_tiny"}).json()
        page.click("#start-button")
        page.wait_for_url("**/runs/*", timeout=60_000)
        run_id = page.url.rstrip("/").split("/")[-1]
        browser.wait_for(page, "document.getElementById('run-status').textContent.trim() === 'Completed'",
                       timeout_s=TIME_BUDGET_S + 150, what="the run to complete")
        page.wait_for_selector("#consume-link", timeout=30_000)
        page.screenshot(path=str(shots / "5-run-completed.png"), full_page=True)

        # Consume: snippets and downloads; the Web API project comes down as a zip.
        page.click("#consume-link")
        page.wait_for_selector("#snippets .snippet[data-key=web_api]")
        page.screenshot(path=str(shots / "6-consume.png"), full_page=True)
        link = page.locator("#downloads a[data-path$='.WebApi.zip']")
        with page.expect_download() as download_info:
            link.click()
        download = download_info.value
        web_zip = tmp_path / download.suggested_filename
        download.save_as(str(web_zip))
        bundle = tmp_path / "MLModel.zip"
        with page.expect_download() as bundle_info:
            page.locator("#downloads a[data-path='MLModel.zip']").click()
        bundle_info.value.save_as(str(bundle))
    browser_s = time.monotonic() - started

    # The downloaded Web API, installed as its README says, predicts as the PredictionEngine does.
    extracted = tmp_path / "webapi"
    with zipfile.ZipFile(web_zip) as archive_in:
        archive_in.extractall(extracted)
    project = next(p.parent for p in extracted.rglob("main.py"))
    python = webapi.webapi_venv(project, tmp_path_factory.getbasetemp())
    api_port = webapi.free_port()
    engine = load_model(bundle)
    expected = engine.predict(str(probe))
    with webapi.serving([str(python), "main.py", "--host", "127.0.0.1", "--port", str(api_port)],
                        project, webapi.venv_env(), api_port, tmp_path / "webapi.log") as url:
        answer = httpx.post(f"{url}/predict", files={"image": (probe.name, probe.read_bytes(), "image/png")},
                            timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["prediction"] == expected.prediction
    assert sorted(body["scores"]) == sorted(engine.labels)
    for label, score in zip(engine.labels, expected.score, strict=True):
        assert abs(body["scores"][label] - score) < 1e-5, (label, body["scores"], expected.score)

    plan = _run_plan(run_id)
    report = {"browser_and_training_s": round(browser_s, 1), "run": run_id,
              "estimated_feature_s": estimate["feature_seconds"],
              "measured_feature_s": plan.get("feature_seconds") if plan else None}
    (shots / "timings.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report), file=sys.stderr)


def _run_plan(run_id: str) -> dict[str, object] | None:
    """The run's plan.json (the trainer's measured feature-pass time), when the run published one."""
    from modelbuilder.workspace import Workspace

    with Workspace.get_or_create(WORKSPACE) as ws:
        path = Path(ws.artifact_root) / run_id / "plan.json"
        return json.loads(path.read_text()) if path.is_file() else None
