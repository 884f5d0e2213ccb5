"""Call an ASGI app with a raw request, exactly as a server would pass it (no client-side URL cleanup).

HTTP clients normalise URLs (``a/../b`` becomes ``b``) and always send a Host header; attackers do not.
This helper builds the ASGI scope as uvicorn does: ``path`` is the percent-decoded ``raw_path``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote


@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def raw_request(
    app: Any,
    method: str,
    target: str | bytes,
    *,
    headers: dict[str, str] | None = None,
    host: str | None = "127.0.0.1:8765",
    body_chunks: list[bytes] | None = None,
) -> RawResponse:
    """Send one request (``target``: the raw, ASCII path plus query) and collect the response."""
    raw = target.encode("utf-8") if isinstance(target, str) else target
    raw_path, _, query = raw.partition(b"?")
    header_list = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if host is not None:
        header_list.append((b"host", host.encode("latin-1")))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),  # what uvicorn does
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": header_list,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
    }
    chunks = body_chunks or [b""]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays connected until the response is sent
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers_out = {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])}
    return RawResponse(start["status"], headers_out, body)
