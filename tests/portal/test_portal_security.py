"""The portal's defences: Host header check, same-origin + token on state changes, path traversal in
downloads and thumbnails, and what uploads must pass (size limit, image signature, safe decoding)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asgi_raw import raw_request
from fastapi.testclient import TestClient
from portal_fixtures import BASE_URL, WORKSPACE, PortalWorld, colour_image, csrf_headers, png_bytes

from factories import write_png_bomb
from modelbuilder.entities import RunStatus
from modelbuilder.portal import create_app
from modelbuilder.portal.results import MAX_UPLOAD_BYTES
from modelbuilder.portal.security import HostPolicy, split_host

API = f"/api/workspaces/{WORKSPACE}"
SECRET = "TOP-SECRET-CONTENT-42"


# --- Host header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "LOCALHOST:8765", "[::1]:8765"])
def test_loopback_hosts_of_the_bound_port_are_accepted(client: TestClient, host: str) -> None:
    assert client.get("/api/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8765",  # DNS rebinding: a name that resolves to 127.0.0.1
        "evil.example",
        "127.0.0.1:9999",  # another port
        "127.0.0.1",  # no port means 80
        "localhost.evil.example:8765",
        "127.0.0.1:8765@evil.example",
        "192.168.1.20:8765",
        "[::1",
        "",
    ],
)
def test_other_hosts_are_refused(client: TestClient, host: str) -> None:
    response = client.get("/api/health", headers={"host": host})
    assert response.status_code == 400
    body = response.json()
    assert "Host header" in body["error"] and "http://127.0.0.1:8765/" in body["hint"]


def test_a_request_without_host_is_refused(client: TestClient) -> None:
    response = raw_request(client.app, "GET", "/api/health", host=None)
    assert response.status_code == 400 and "Host header" in response.json()["error"]


def test_pages_and_static_files_are_guarded_too(client: TestClient) -> None:
    for path in ("/", "/static/portal.js", "/openapi.json", f"/workspaces/{WORKSPACE}/computes"):
        assert client.get(path, headers={"host": "evil.example:8765"}).status_code == 400
        assert client.get(path).status_code == 200


def test_host_policy_rules() -> None:
    loopback = HostPolicy("127.0.0.1", 8765)
    assert loopback.allows("127.0.0.1:8765") and loopback.allows("localhost:8765")
    assert not loopback.allows("10.0.0.5:8765") and not loopback.allows(None)
    assert loopback.allows_origin("http://localhost:8765") and loopback.allows_origin(
        "http://127.0.0.1:8765/x"
    )
    assert not loopback.allows_origin("https://127.0.0.1:8765")
    assert not loopback.allows_origin("http://evil.example:8765") and not loopback.allows_origin("null")
    assert not loopback.allows_origin("http://user@127.0.0.1:8765")
    everywhere = HostPolicy("0.0.0.0", 8000)
    assert everywhere.allows("10.0.0.5:8000") and everywhere.allows("[fe80::1]:8000")
    assert not everywhere.allows("evil.example:8000")  # names are still checked: DNS rebinding
    assert (
        HostPolicy("10.1.2.3", 80).allows("10.1.2.3") and HostPolicy("::1", 80).base_url == "http://[::1]:80"
    )
    assert HostPolicy("127.0.0.1", 80, extra_hosts=["portal.lan"]).allows("portal.lan")
    assert split_host("[::1]:8765") == ("::1", 8765)
    assert split_host("Host:99999") is None and split_host("a:b:c") is None


# --- same origin and token ------------------------------------------------------------------------


def _cancel(client: TestClient, run_id: str, headers: dict[str, str]) -> int:
    return client.post(f"{API}/runs/{run_id}/cancel", headers=headers).status_code


def test_cancel_needs_same_origin_and_token(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run()
    token = client.app.state.portal.csrf_token  # type: ignore[attr-defined]
    refused = [
        {},  # neither Origin nor Referer
        {"X-CSRF-Token": token},  # token, but no origin
        {"Origin": "http://evil.example", "X-CSRF-Token": token},
        {"Origin": "http://evil.example:8765", "X-CSRF-Token": token},
        {"Origin": "null", "X-CSRF-Token": token},
        {"Origin": "https://127.0.0.1:8765", "X-CSRF-Token": token},
        {"Referer": "http://evil.example/page", "X-CSRF-Token": token},
        {"Origin": BASE_URL},  # right origin, no token
        {"Origin": BASE_URL, "X-CSRF-Token": "guessed"},
        {"Origin": BASE_URL, "X-CSRF-Token": token[:-1]},
    ]
    for headers in refused:
        response = client.post(f"{API}/runs/{run_id}/cancel", headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["hint"], headers
    assert world.store.get_run(run_id).status is RunStatus.RUNNING
    referer = {"Referer": f"{BASE_URL}/workspaces/{WORKSPACE}/runs/{run_id}", "X-CSRF-Token": token}
    assert _cancel(client, run_id, referer) == 200
    # No worker runs it, so the cancel ends it at once (the CLI's cancel does the same).
    assert world.store.get_run(run_id).status is RunStatus.CANCELED


def test_each_server_has_its_own_token(world: PortalWorld) -> None:
    first, second = create_app(WORKSPACE), create_app(WORKSPACE)
    assert first.state.portal.csrf_token != second.state.portal.csrf_token
    run_id = world.start_run()
    with TestClient(second, base_url=BASE_URL) as other:
        assert _cancel(other, run_id, csrf_headers(first)) == 403
        assert _cancel(other, run_id, csrf_headers(second)) == 200


def test_pages_embed_the_token(client: TestClient, world: PortalWorld) -> None:
    run_id = world.start_run()
    page = client.get(f"/workspaces/{WORKSPACE}/runs/{run_id}").text
    assert f'<meta name="csrf-token" content="{client.app.state.portal.csrf_token}">' in page  # type: ignore[attr-defined]


def test_upload_needs_same_origin_and_token(client: TestClient, world: PortalWorld) -> None:
    run_id = world.completed_run()
    files = {"file": ("red.png", png_bytes(colour_image("red")), "image/png")}
    assert client.post(f"{API}/runs/{run_id}/predict", files=files).status_code == 403
    headers = {"Origin": "http://evil.example", "X-CSRF-Token": client.app.state.portal.csrf_token}  # type: ignore[attr-defined]
    assert client.post(f"{API}/runs/{run_id}/predict", files=files, headers=headers).status_code == 403
    assert (
        client.post(f"{API}/runs/{run_id}/predict", files=files, headers=csrf_headers(client.app)).status_code
        == 200
    )


def test_responses_carry_a_strict_content_security_policy(client: TestClient) -> None:
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"


# --- path traversal -------------------------------------------------------------------------------


@pytest.fixture
def traversal_setup(world: PortalWorld, tmp_path: Path) -> tuple[str, str]:
    """A completed run whose folder holds symlinks out of it, secrets beside it, and a second run whose
    whole artifact folder is a symlink to a folder outside the artifact root."""
    run_id = world.completed_run()
    root = world.artifacts.root
    run_dir = world.artifacts.run_dir(run_id)
    (root / "secret.txt").write_text(SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "MLModel.zip").write_text(SECRET)
    other = world.start_run("other")
    world.artifacts.put_bytes(other, SECRET.encode(), "other.txt")
    os.symlink("../secret.txt", run_dir / "link_out")
    os.symlink(str(outside), run_dir / "dir_link")
    os.symlink("../../secret.txt", run_dir / "logs" / "link_up")
    os.symlink(str(outside / "secret.txt"), run_dir / "abs_link")
    linked_run = world.start_run("linked")
    os.symlink(str(outside), world.artifacts.run_dir(linked_run))
    return run_id, linked_run


TRAVERSALS = [
    "../secret.txt",
    "../../secret.txt",
    "../../../../../../etc/passwd",
    "./../secret.txt",
    "logs/../../secret.txt",
    "%2e%2e/secret.txt",
    "%2E%2E/secret.txt",
    "%2e%2e%2fsecret.txt",
    "..%2fsecret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "logs/%2e%2e/%2e%2e/secret.txt",
    "%252e%252e/secret.txt",
    "%252e%252e%252fsecret.txt",
    "..%252fsecret.txt",
    "%25252e%25252e%25252fsecret.txt",
    "..%5csecret.txt",
    "%2e%2e%5csecret.txt",
    "..%255csecret.txt",
    "logs%5c..%5c..%5csecret.txt",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "//etc/passwd",
    "C:/Windows/win.ini",
    "C:%5cWindows%5cwin.ini",
    "%5c%5cserver%5cshare%5csecret.txt",
    "~/secret.txt",
    "~root/.bashrc",
    "%ef%bc%8e%ef%bc%8e/secret.txt",  # fullwidth dots, NFKC-normalised to ..
    "%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 dots
    "..%00/secret.txt",
    "secret.txt%00.png",
    "....//secret.txt",
    "link_out",
    "dir_link/secret.txt",
    "logs/link_up",
    "abs_link",
]


def test_at_least_30_traversal_attempts_are_refused(
    client: TestClient, world: PortalWorld, traversal_setup: tuple[str, str]
) -> None:
    run_id, linked_run = traversal_setup
    assert len(TRAVERSALS) >= 30
    base = f"{API}/runs/{run_id}/artifacts/"
    ok = raw_request(client.app, "GET", base + "bestModelMap.json")
    assert ok.status_code == 200 and b"red" in ok.body  # the route itself works
    for attempt in TRAVERSALS:
        response = raw_request(client.app, "GET", base + attempt)
        assert response.status_code in (400, 404), (attempt, response.status_code)
        assert SECRET not in response.text and "root:" not in response.text, attempt
        assert "artifact" in response.json()["error"], attempt  # refused by the artifact store's checks
    # Through an ordinary HTTP client too (which cleans some of them up on its own).
    for attempt in TRAVERSALS:
        response = client.get(base + attempt)
        assert response.status_code in (400, 404), attempt
        assert SECRET not in response.text, attempt
    # A run whose whole folder is a symlink out of the artifact root.
    linked = raw_request(client.app, "GET", f"{API}/runs/{linked_run}/artifacts/MLModel.zip")
    assert linked.status_code == 404 and SECRET not in linked.text
    # Traversal in the run id segment only ever looks the id up in the store.
    for run_part in ("..", "%2e%2e", "..%2f..%2fsecret.txt", run_id + "%2f.."):
        response = raw_request(client.app, "GET", f"{API}/runs/{run_part}/artifacts/secret.txt")
        assert response.status_code in (400, 404) and SECRET not in response.text, run_part


def test_thumbnails_serve_only_images_listed_in_the_evaluation(
    client: TestClient, world: PortalWorld, traversal_setup: tuple[str, str]
) -> None:
    run_id, _ = traversal_setup
    listed = str(world.images[0])
    assert client.get(f"{API}/runs/{run_id}/thumbnail", params={"path": listed}).status_code == 200
    secret_png = world.data_dir / "secret.png"
    colour_image("red").save(secret_png)  # a real image, next to listed ones, but not listed
    for path in (
        str(secret_png),
        str(world.artifacts.root / "secret.txt"),
        "/etc/passwd",
        listed + "/../../secret.png",
        listed.replace("red_0", "red_0/../../secret"),
        "red/../secret.png",
        "",
    ):
        response = client.get(f"{API}/runs/{run_id}/thumbnail", params={"path": path})
        assert response.status_code in (404, 422), path
        assert SECRET not in response.text
        if response.status_code == 404:
            assert "lists no validation image" in response.json()["error"]


# --- uploads --------------------------------------------------------------------------------------


def _upload(client: TestClient, run_id: str, data: bytes, name: str = "upload.png"):  # type: ignore[no-untyped-def]
    return client.post(
        f"{API}/runs/{run_id}/predict",
        files={"file": (name, data, "application/octet-stream")},
        headers=csrf_headers(client.app),
    )


def test_upload_size_limit(client: TestClient, world: PortalWorld) -> None:
    run_id = world.completed_run()
    just_over = png_bytes(colour_image("red"))
    just_over += b"\0" * (MAX_UPLOAD_BYTES + 1 - len(just_over))
    response = _upload(client, run_id, just_over)
    assert response.status_code == 413 and "limit is 10 MB" in response.json()["error"]
    response = _upload(client, run_id, just_over + b"\0" * (2 << 20))  # refused by its Content-Length
    assert response.status_code == 413 and response.json()["hint"]
    # A chunked body without Content-Length is counted as it arrives.
    headers = {**csrf_headers(client.app), "content-type": "multipart/form-data; boundary=xyz"}
    chunks = [b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n']
    chunks += [b"\0" * (1 << 20)] * 12
    streamed = raw_request(
        client.app, "POST", f"{API}/runs/{run_id}/predict", headers=headers, body_chunks=chunks
    )
    assert streamed.status_code == 413 and "larger than the portal accepts" in streamed.json()["error"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"hello, this is not an image\n", "contains text"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"<!DOCTYPE html><html><body>x</body></html>", "HTML"),
        (b"PK\x03\x04" + b"\0" * 40, "zip"),
        (b"\x00\x01\x02\x03" * 20, "no known image signature"),
    ],
)
def test_non_images_are_refused_by_content(
    client: TestClient, world: PortalWorld, data: bytes, words: str
) -> None:
    run_id = world.completed_run()
    response = _upload(client, run_id, data, name="looks-like.png")
    assert response.status_code == 415
    assert "not an image" in response.json()["error"] and words in response.json()["error"]


def test_broken_empty_and_bomb_images_are_refused(
    client: TestClient, world: PortalWorld, tmp_path: Path
) -> None:
    run_id = world.completed_run()
    empty = _upload(client, run_id, b"")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    truncated = png_bytes(colour_image("red", size=64))[:80]
    broken = _upload(client, run_id, truncated)
    assert broken.status_code == 400 and "cannot be used" in broken.json()["error"]
    bomb = write_png_bomb(tmp_path / "bomb.png").read_bytes()
    assert len(bomb) < MAX_UPLOAD_BYTES
    refused = _upload(client, run_id, bomb)
    assert refused.status_code == 400 and "too large to decode safely" in refused.json()["error"]
