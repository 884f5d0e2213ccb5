"""The new-run page and the Consume page as served (HTML): what each step shows before any script runs."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from portal_fixtures import BASE_URL, WORKSPACE, PortalWorld, csrf_headers
from wizard_fixtures import API, image_files, wizard_app, zip_bytes

from modelbuilder.codegen.snippets import consume_snippets
from modelbuilder.compute.sizes import list_sizes

PAGE = f"/workspaces/{WORKSPACE}/new-run"


@pytest.fixture
def wclient(world: PortalWorld, tmp_path: Path) -> Iterator[TestClient]:
    (tmp_path / "pictures").mkdir()
    with TestClient(wizard_app([tmp_path / "pictures"]), base_url=BASE_URL) as client:
        yield client


def test_new_run_page_shows_every_step(wclient: TestClient, tmp_path: Path) -> None:
    page = wclient.get(PAGE)
    assert page.status_code == 200, page.text
    text = page.text
    for step in ("1 · Scenario", "2 · Environment", "3 · Data", "4 · Train"):
        assert step in text
    assert "Image classification" in text and "Object detection" in text and "not offered" in text
    rows = re.findall(r'<input type="radio" name="size" value="([^"]+)"', text)
    assert rows == [s.name for s in list_sizes()]
    assert 'data-name-pattern="' in text and "/static/wizard.js" in text
    assert html.escape(str((tmp_path / "pictures").resolve())) in text
    assert 'value="local"' in text and "checked" in text
    assert "<script>" not in text  # CSP: scripts only from files


def test_errored_compute_is_shown_with_both_fixes(wclient: TestClient) -> None:
    wclient.post(f"{API}/computes", json={"name": "gpu-1", "size": "Standard_NC12"},
                 headers=csrf_headers(wclient.app))
    text = wclient.get(PAGE).text
    failure = text[text.index('class="compute-failure" data-name="gpu-1"'):]
    assert "could not be created" in failure and "GPU" in failure
    assert 'class="fix-rename" data-name="gpu-1"' in failure
    assert 'class="danger fix-delete" data-name="gpu-1"' in failure
    assert re.search(r'name="compute" value="gpu-1"\s+disabled', text)


def test_earlier_uploads_are_offered(wclient: TestClient) -> None:
    assert 'id="earlier-uploads"' not in wclient.get(PAGE).text
    archive = ("tulips.zip", zip_bytes(image_files()), "application/zip")
    headers = csrf_headers(wclient.app)
    stored = wclient.post(f"{API}/datasets", headers=headers, files={"archive": archive}).json()
    text = wclient.get(PAGE).text
    assert f'data-source="dataset:{stored["id"]}">tulips</a>' in text


def test_without_data_roots_the_page_names_the_option(world: PortalWorld) -> None:
    with TestClient(wizard_app([]), base_url=BASE_URL) as client:
        text = client.get(PAGE).text
    assert "modelbuilder portal --data-root DIR" in text and 'id="folder-picker"' not in text


def test_consume_page_has_snippets_and_every_download(wclient: TestClient, world: PortalWorld) -> None:
    run_id = world.completed_run()
    world.artifacts.put_bytes(run_id, b"PK\x05\x06" + bytes(18), "Flowers.WebApi.zip")
    run_page = wclient.get(f"/workspaces/{WORKSPACE}/runs/{run_id}").text
    assert f'href="/workspaces/{WORKSPACE}/runs/{run_id}/consume"' in run_page
    page = wclient.get(f"/workspaces/{WORKSPACE}/runs/{run_id}/consume")
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    for path in ("bestModel.onnx", "bestModelMap.json", "MLModel.zip", "Flowers.Model.zip",
                 "Flowers.ConsoleApp.zip", "Flowers.WebApi.zip"):
        assert f'download data-path="{path}"' in text, path
    for snippet in consume_snippets("Flowers"):
        assert snippet.code in text, snippet.key
    assert text.count('class="copy"') >= len(consume_snippets("Flowers"))
    assert "modelbuilder run download" in text
    webapi = wclient.get(f"{API}/runs/{run_id}/artifacts/Flowers.WebApi.zip")
    assert webapi.status_code == 200 and webapi.content.startswith(b"PK")


def test_run_files_list_the_web_api(wclient: TestClient, world: PortalWorld) -> None:
    run_id = world.completed_run()
    world.artifacts.put_bytes(run_id, b"PK\x05\x06" + bytes(18), "Flowers.WebApi.zip")
    files = {f["path"]: f for f in wclient.get(f"{API}/runs/{run_id}/artifacts").json()}
    assert files["Flowers.WebApi.zip"]["kind"] == "code" and "Web API" in files["Flowers.WebApi.zip"]["title"]
