"""The Data step's API: the folder picker confined to the data roots, uploads (limits, zip bombs,
zip-slip, links, token), content-addressed datasets, and the preview with every problem the scan finds."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from portal_fixtures import BASE_URL, PortalWorld, csrf_headers
from wizard_fixtures import API, SMALL_LIMITS, image_files, symlink_zip, wizard_app, zip_bytes

from factories import make_image, make_image_folder, write_truncated


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """A data root with a labelled folder, a link leading out of it, and a secret file outside it."""
    root = tmp_path / "root"
    make_image_folder(root / "flowers", classes=2, per_class=3, size=24)
    (root / "flowers" / ".hidden").mkdir()
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    (outside / "secret" / "passwords.txt").write_text("nope")
    os.symlink(outside, root / "escape")
    os.symlink(root / "flowers", root / "alias")  # a link that stays inside is fine
    return root, outside


@pytest.fixture
def wclient(world: PortalWorld, roots: tuple[Path, Path]) -> Iterator[TestClient]:
    app = wizard_app([roots[0]])
    with TestClient(app, base_url=BASE_URL) as client:
        yield client


def _upload_zip(client: TestClient, data: bytes, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return client.post(f"{API}/datasets", files={"archive": ("data.zip", data, "application/zip")},
                       headers=csrf_headers(client.app) if headers is None else headers)


def _datasets_dir(world: PortalWorld) -> Path:
    from modelbuilder.services.workspaces import workspace_folder

    return workspace_folder(world.workspace) / "datasets"


# --- folder picker ------------------------------------------------------------------------------


def test_data_roots_and_listing(wclient: TestClient, roots: tuple[Path, Path]) -> None:
    assert wclient.get("/api/data-roots").json() == [{"index": 0, "path": str(roots[0].resolve())}]
    top = wclient.get("/api/data-roots/0/folders").json()
    names = [f["name"] for f in top["folders"]]
    assert names == ["alias", "flowers"]  # 'escape' leads out: not listed at all
    assert top["parent"] is None
    flowers = wclient.get("/api/data-roots/0/folders", params={"path": "flowers"}).json()
    assert [f["name"] for f in flowers["folders"]] == ["label0", "label1"]  # hidden folder left out
    assert flowers["folders"][0]["files"] == 3
    assert flowers["source"] == "folder:0:flowers" and flowers["parent"] == ""
    assert wclient.get("/api/data-roots/0/folders", params={"path": "alias/label0"}).status_code == 200


@pytest.mark.parametrize(
    "raw_query, status",
    [
        ("path=..", 400),
        ("path=flowers/../..", 400),
        ("path=%2e%2e", 400),  # decoded once: '..'
        ("path=%2e%2e%2f%2e%2e", 400),
        ("path=flowers%2f..%2f..%2foutside", 400),
        ("path=%252e%252e", 404),  # decoded once: the literal name '%2e%2e', which is no folder
        ("path=/etc", 400),
        ("path=%2fetc", 400),
        ("path=~", 400),
        ("path=escape", 400),  # a link leading out
        ("path=escape/secret", 400),
        ("path=flowers%5c..%5c..", 400),  # backslashes
        ("path=flowers%00", 400),
        ("path=missing", 404),
    ],
)
def test_folder_picker_refuses_paths_out_of_the_root(
    wclient: TestClient, raw_query: str, status: int
) -> None:
    response = wclient.get(f"/api/data-roots/0/folders?{raw_query}")
    assert response.status_code == status, response.text
    assert response.json()["hint"]
    assert "passwords" not in response.text and "secret" not in response.json().get("folders", "")


def test_unknown_root_and_sources_outside_are_refused(wclient: TestClient) -> None:
    assert wclient.get("/api/data-roots/1/folders").status_code == 404
    assert wclient.get("/api/data-roots/-1/folders").status_code in (404, 422)
    for source in ("folder:0:escape/secret", "folder:0:..", "folder:0:/etc", "folder:x:flowers", "/etc",
                   "dataset:../../etc", "dataset:0123"):
        response = wclient.get(f"{API}/data/preview", params={"source": source})
        assert response.status_code in (400, 404), (source, response.text)


def test_without_data_roots_nothing_is_listed(world: PortalWorld) -> None:
    with TestClient(wizard_app([]), base_url=BASE_URL) as client:
        assert client.get("/api/data-roots").json() == []
        response = client.get("/api/data-roots/0/folders")
        assert response.status_code == 404 and "--data-root" in response.json()["hint"]


# --- uploads ------------------------------------------------------------------------------------


def test_zip_upload_is_content_addressed(wclient: TestClient, world: PortalWorld) -> None:
    files = image_files()
    first = _upload_zip(wclient, zip_bytes(files))
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["created"] and body["files"] == 6 and body["labels"] == ["label0", "label1"]
    # The same content in another order, stored (not deflated), or under a top folder: the same dataset.
    assert body["name"] == "data"  # the zip's file name: the zip has no top folder
    again = _upload_zip(wclient, zip_bytes(files, compression=zipfile.ZIP_STORED, reverse=True)).json()
    nested = _upload_zip(wclient, zip_bytes({f"flowers/{k}": v for k, v in files.items()})).json()
    assert again["id"] == nested["id"] == body["id"] and not again["created"]
    assert nested["name"] == "data"  # the first upload named the content
    dropped = wclient.post(
        f"{API}/datasets",
        files=[("files", (name, data, "image/png")) for name, data in files.items()],
        headers=csrf_headers(wclient.app),
    )
    assert dropped.status_code == 201 and dropped.json()["id"] == body["id"]
    changed = dict(files, **{"label1/extra.png": files["label0/label0_0.png"]})
    other = _upload_zip(wclient, zip_bytes(changed)).json()["id"]
    assert other != body["id"]
    listed = wclient.get(f"{API}/datasets").json()
    assert sorted(d["id"] for d in listed) == sorted({body["id"], other})
    stored = _datasets_dir(world)
    assert sorted(p.name for p in (stored / body["id"]).iterdir()) == ["label0", "label1"]
    assert not [p for p in stored.iterdir() if p.name.startswith(".upload-")]


def test_an_upload_is_named_by_its_top_folder(wclient: TestClient) -> None:
    files = {f"My Flowers/{k}": v for k, v in image_files().items()}
    assert _upload_zip(wclient, zip_bytes(files)).json()["name"] == "My Flowers"
    dropped = wclient.post(f"{API}/datasets", headers=csrf_headers(wclient.app), files=[
        ("files", (f"tulips/{k}", v, "image/png")) for k, v in image_files(per_class=4).items()])
    assert dropped.json()["name"] == "tulips" and dropped.json()["labels"] == ["label0", "label1"]


def test_upload_needs_token_and_same_origin(wclient: TestClient, world: PortalWorld) -> None:
    data = zip_bytes(image_files())
    token = wclient.app.state.portal.csrf_token  # type: ignore[attr-defined]
    for headers in ({}, {"X-CSRF-Token": token}, {"Origin": "http://evil.example", "X-CSRF-Token": token},
                    {"Origin": BASE_URL}, {"Origin": BASE_URL, "X-CSRF-Token": "guess"}):
        assert _upload_zip(wclient, data, headers).status_code == 403, headers
    assert not _datasets_dir(world).exists()


def _bomb(size: int = 5 * 1024 * 1024) -> bytes:
    return zip_bytes({"label0/a.png": b"\0" * size, "label1/b.png": b"\0" * 10})


@pytest.mark.parametrize(
    "name, data, needle",
    [
        ("zip-slip", zip_bytes({"../evil.png": b"x", "label0/a.png": b"x"}), "leads out"),
        ("zip-slip deep", zip_bytes({"label0/../../evil.png": b"x"}), "leads out"),
        ("absolute", zip_bytes({"/tmp/evil.png": b"x"}), "leads out"),
        ("drive", zip_bytes({"C:/evil.png": b"x"}), "leads out"),
        ("backslash", zip_bytes({"label0\\..\\..\\evil.png": b"x"}), "safe relative path"),
        ("bomb ratio", _bomb(), "zip bomb"),
        ("link member", symlink_zip("label0/link.png", "/etc/passwd"), "link"),
        ("not a zip", b"PK\x03\x04 this is not a zip", "not a zip"),
        ("too many files", zip_bytes({f"label0/{i}.png": bytes([i]) for i in range(51)}), "more than 50"),
        ("loose files", zip_bytes({"a.png": b"x", "label0/b.png": b"y"}), "outside any label folder"),
        ("empty", zip_bytes({}), "no files"),
    ],
)
def test_unsafe_uploads_are_refused(wclient: TestClient, world: PortalWorld, tmp_path: Path,
                                    name: str, data: bytes, needle: str) -> None:
    response = _upload_zip(wclient, data)
    assert response.status_code == 400, (name, response.text)
    assert needle in response.json()["error"], response.json()
    assert response.json()["hint"]
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()
    stored = _datasets_dir(world)
    assert not stored.exists() or not list(stored.iterdir()), list(stored.iterdir())


def test_total_size_limit_counts_inflated_bytes(world: PortalWorld) -> None:
    """Each member compresses only ~3x (under the ratio), but together they inflate past the total."""
    import numpy as np

    rng = np.random.default_rng(0)
    half_random = lambda: rng.integers(0, 256, 1024 * 1024, dtype=np.uint8).tobytes() + b"\0" * (2 << 20)  # noqa: E731
    data = zip_bytes({f"label{i % 2}/{i}.bin": half_random() for i in range(3)})
    assert len(data) < SMALL_LIMITS.max_upload_bytes * 2
    limits = type(SMALL_LIMITS)(max_upload_bytes=8 << 20, max_files=50, max_total_bytes=5 << 20,
                                max_file_bytes=6 << 20)
    with TestClient(wizard_app([], limits), base_url=BASE_URL) as client:
        response = _upload_zip(client, data)
    assert response.status_code == 400 and "more than 5 MB" in response.json()["error"], response.text


def test_upload_over_the_byte_limit_is_413(wclient: TestClient) -> None:
    response = _upload_zip(wclient, b"PK" + os.urandom(3 * 1024 * 1024))
    assert response.status_code == 413
    assert "dataset upload" in response.json()["error"] and "--data-root" in response.json()["hint"]


def test_dropped_folder_with_unsafe_names_is_refused(wclient: TestClient, world: PortalWorld) -> None:
    for name in ("../x.png", "/abs/x.png", "label0/../../x.png"):
        response = wclient.post(f"{API}/datasets", files=[("files", (name, b"x", "image/png"))],
                                headers=csrf_headers(wclient.app))
        assert response.status_code == 400, (name, response.text)
    both = wclient.post(f"{API}/datasets", headers=csrf_headers(wclient.app), files=[
        ("archive", ("a.zip", zip_bytes(image_files()), "application/zip")),
        ("files", ("label0/a.png", b"x", "image/png"))])
    assert both.status_code == 400


# --- preview ------------------------------------------------------------------------------------


def test_preview_reports_every_problem(wclient: TestClient, roots: tuple[Path, Path]) -> None:
    data = roots[0] / "flowers"
    write_truncated(data / "label0" / "broken.png")
    (data / "label1" / "notes.png").write_text("not an image at all")
    (data / "label2").mkdir()
    (data / "label2" / "dup.png").write_bytes((data / "label0" / "label0_0.png").read_bytes())
    response = wclient.get(f"{API}/data/preview", params={"source": "folder:0:flowers"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["labels"] == ["label0", "label1", "label2"]
    kinds = {p["kind"] for p in body["problems"]}
    assert {"corrupt", "not_an_image", "duplicate_across_labels", "too_few_images"} <= kinds, body["problems"]
    assert body["blocking"] and "label2" in body["blocking"]
    assert body["chart_svg"].startswith("<svg") and "label2" in body["chart_svg"]
    thumbs = body["thumbnails"]["label1"]
    assert thumbs and wclient.get(thumbs[0]).headers["content-type"] == "image/jpeg"
    for path in ("label0/broken.png", "../outside/secret/passwords.txt", "label1/notes.png"):
        refused = wclient.get(f"{API}/data/thumbnail", params={"source": "folder:0:flowers", "path": path})
        assert refused.status_code == 404, path


def test_preview_of_an_upload(wclient: TestClient) -> None:
    files = image_files(per_class=4)
    files["label1/readme.png"] = b"hello"
    dataset = _upload_zip(wclient, zip_bytes(files)).json()
    body = wclient.get(f"{API}/data/preview", params={"source": dataset["source"]}).json()
    assert body["counts"] == {"label0": 4, "label1": 4} and body["blocking"] is None
    assert [p["kind"] for p in body["problems"]] == ["not_an_image", "few_images", "few_images"]
    assert body["problems"][0]["path"] == "label1/readme.png"


def test_preview_of_data_that_cannot_train(wclient: TestClient) -> None:
    dataset = _upload_zip(wclient, zip_bytes({k: v for k, v in image_files().items() if "label0" in k}))
    body = wclient.get(f"{API}/data/preview", params={"source": dataset.json()["source"]}).json()
    assert body["blocking"] and "2 labels" in body["blocking"] and body["blocking_hint"]


def test_zip_with_only_one_big_member_is_not_a_false_bomb(wclient: TestClient) -> None:
    """A stored (uncompressed) member of random bytes has ratio 1: accepted."""
    data = zip_bytes({"label0/a.bin": os.urandom(1 << 20), "label1/b.bin": os.urandom(10)},
                     compression=zipfile.ZIP_STORED)
    assert _upload_zip(wclient, data).status_code == 201


def test_data_with_links_out_of_the_root_is_not_read(wclient: TestClient, roots: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    data, outside = roots[0] / "flowers", roots[1]
    secret = outside / "secret" / "photo.png"
    secret.write_bytes((data / "label0" / "label0_0.png").read_bytes())
    os.symlink(secret, data / "label1" / "stolen.png")
    os.symlink(outside / "secret", data / "label2")
    body = wclient.get(f"{API}/data/preview", params={"source": "folder:0:flowers"}).json()
    assert body["blocking"] and "lead out of the data root" in body["blocking"]
    out = sorted(p["path"] for p in body["problems"] if p["kind"] == "link_out_of_root")
    assert out == ["label1/stolen.png", "label2/passwords.txt", "label2/photo.png"]
    assert body["thumbnails"] == {} and body["counts"] == {}
    refused = wclient.post(f"{API}/train", json={"source": "folder:0:flowers"},
                           headers=csrf_headers(wclient.app))
    assert refused.status_code == 409 and "lead out" in refused.json()["error"]
    thumb = wclient.get(f"{API}/data/thumbnail",
                        params={"source": "folder:0:flowers", "path": "label1/stolen.png"})
    assert thumb.status_code == 404


def test_links_inside_the_root_are_fine(wclient: TestClient, roots: tuple[Path, Path]) -> None:
    data = roots[0] / "flowers"
    (roots[0] / "more").mkdir()
    extra = roots[0] / "more" / "extra.png"
    make_image(1, 99, 24).save(extra)
    os.symlink(extra, data / "label1" / "linked.png")
    body = wclient.get(f"{API}/data/preview", params={"source": "folder:0:flowers"}).json()
    assert {p["kind"] for p in body["problems"]} == {"few_images", "hidden"}  # the fixture's .hidden folder
    assert body["counts"] == {"label0": 3, "label1": 4} and body["blocking"] is None


def test_a_thumbnail_replaced_by_a_link_out_is_not_served(wclient: TestClient, roots: tuple[Path, Path]
                                                          ) -> None:
    data, outside = roots[0] / "flowers", roots[1]
    body = wclient.get(f"{API}/data/preview", params={"source": "folder:0:flowers"}).json()
    assert body["thumbnails"]["label0"]
    victim = data / "label0" / "label0_0.png"
    (outside / "secret" / "photo.png").write_bytes(victim.read_bytes())
    victim.unlink()
    os.symlink(outside / "secret" / "photo.png", victim)  # swapped right after the scan
    params = {"source": "folder:0:flowers", "path": "label0/label0_0.png"}
    assert wclient.get(f"{API}/data/thumbnail", params=params).status_code == 404


def test_many_converted_images_are_one_row_a_few_are_listed(wclient: TestClient, roots: tuple[Path, Path]
                                                            ) -> None:
    data = roots[0] / "flowers"
    for index in range(8):  # greyscale images are kept (converted to RGB): one note each from the scan
        make_image(0, 100 + index, size=24).convert("L").save(data / "label0" / f"grey_{index}.png")
    make_image(1, 100, size=24).convert("L").save(data / "label1" / "grey_one.png")
    body = wclient.get(f"{API}/data/preview", params={"source": "folder:0:flowers"}).json()
    notes = [p for p in body["problems"] if p["action"] == "converted"]
    assert len(notes) == 1, notes
    assert notes[0]["message"].startswith("9 images were converted") and notes[0]["path"] is None
    assert body["counts"] == {"label0": 11, "label1": 4}

    for path in sorted((data / "label0").glob("grey_*.png"))[1:]:
        path.unlink()
    body = wclient.get(f"{API}/data/preview", params={"source": "folder:0:flowers"}).json()
    listed = sorted(p["path"] for p in body["problems"] if p["action"] == "converted")
    assert listed == ["label0/grey_0.png", "label1/grey_one.png"]
