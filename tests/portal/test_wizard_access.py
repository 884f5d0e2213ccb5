"""A portal that writes binds to loopback unless given ``--host`` and an access token: without a token it
does not start on another address; with one, every request must carry it (bearer header, or the cookie a
``?access_token=`` link sets), and writes still need the page's CSRF token and a same-origin request."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from portal_fixtures import BASE_URL, WORKSPACE, PortalWorld, csrf_headers

from modelbuilder.errors import InvalidParameterError, InvalidStateError
from modelbuilder.portal import create_app

TOKEN = "s3cret-token-of-the-portal-0123456789"
API = f"/api/workspaces/{WORKSPACE}"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_no_token_no_portal_beyond_loopback(world: PortalWorld, monkeypatch: pytest.MonkeyPatch,
                                           host: str) -> None:
    monkeypatch.delenv("MODELBUILDER_PORTAL_TOKEN", raising=False)
    with pytest.raises(InvalidStateError) as caught:
        create_app(WORKSPACE, host=host, port=8765)
    assert "MODELBUILDER_PORTAL_TOKEN" in (caught.value.hint or "")
    create_app(WORKSPACE, host="127.0.0.1", port=8765)  # loopback needs none
    monkeypatch.setenv("MODELBUILDER_PORTAL_TOKEN", "short")
    with pytest.raises(InvalidParameterError):
        create_app(WORKSPACE, host=host, port=8765)


def test_loopback_portal_ignores_the_environment_token(world: PortalWorld, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """The portal `modelbuilder train` starts for its link stays open to this machine's browser."""
    monkeypatch.setenv("MODELBUILDER_PORTAL_TOKEN", TOKEN)
    with TestClient(create_app(WORKSPACE, host="127.0.0.1", port=8765), base_url=BASE_URL) as client:
        assert client.get("/api/health").status_code == 200


def test_every_request_needs_the_token(world: PortalWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBUILDER_PORTAL_TOKEN", TOKEN)
    app = create_app(WORKSPACE, host="0.0.0.0", port=8765)
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as client:
        for path in ("/", "/api/health", f"/workspaces/{WORKSPACE}/new-run", "/static/portal.css",
                     f"{API}/datasets"):
            response = client.get(path)
            assert response.status_code == 401, path
            assert "access_token" in response.json()["hint"]
        assert client.get("/api/health", headers={"Authorization": "Bearer wrong-token-0123456789"}
                          ).status_code == 401
        assert client.get("/?access_token=wrong-token-0123456789").status_code == 401
        assert client.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # A link with the token sets an HttpOnly, SameSite=Strict cookie and drops the token from the address.
        login = client.get(f"/workspaces/{WORKSPACE}/new-run?access_token={TOKEN}&x=1")
        assert login.status_code == 303
        assert login.headers["location"] == f"/workspaces/{WORKSPACE}/new-run?x=1"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.get(f"/workspaces/{WORKSPACE}/new-run").status_code == 200
        # Writes: the access token is not enough; the page's CSRF token and origin are still needed.
        body = {"name": "cpu-1", "size": "Standard_D2s_v3"}
        assert client.post(f"{API}/computes", json=body).status_code == 403
        assert client.post(f"{API}/computes", json=body, headers=csrf_headers(app)).status_code == 201
