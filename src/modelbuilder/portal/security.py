"""What keeps a local portal from being used by other web pages: Host check, same-origin + token, limits.

- ``HostCheckMiddleware``: a request whose ``Host`` header is not the bound host and port (or a loopback
  equivalent: ``localhost``, ``127.0.0.1``, ``[::1]``) is refused before it reaches a route. This stops
  DNS-rebinding pages from reading the portal through a name that points at 127.0.0.1.
- ``require_same_origin``: state-changing requests (cancel, upload) must come from a page of this portal:
  their ``Origin`` (else ``Referer``) must be the portal's own origin, and they must carry the per-server
  random token that every page embeds (``X-CSRF-Token`` header).
- ``BodyLimitMiddleware``: request bodies above a limit are refused with 413 while they are read, whether
  or not they declare a Content-Length.
- ``AccessTokenMiddleware``: with an access token (required when the portal listens beyond loopback),
  every request must carry it (bearer header, or the cookie that ``?access_token=`` sets).
- ``SecurityHeadersMiddleware``: a strict Content-Security-Policy (our own scripts and styles only), no
  framing, no MIME sniffing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import STATUS_HINTS, PortalHTTPError, error_body

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
CSRF_HEADER = "X-CSRF-Token"

_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def new_csrf_token() -> str:
    """A random token for one server process; pages embed it, state-changing requests send it back."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def split_host(value: str, default_port: int = 80) -> tuple[str, int] | None:
    """``'host:port'`` / ``'[::1]:port'`` / ``'host'`` -> (lower-case host without brackets, port)."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:
        return None  # a bare IPv6 address without brackets is not a valid Host
    else:
        name, port_text = value, ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        return name, int(port_text)
    return name, default_port


class HostPolicy:
    """Which ``Host`` values (and so which origins) name this portal.

    Args:
        host: the address the server is bound to.
        port: the port it listens on.
        extra_hosts: more host names to accept (for a reverse proxy or a machine name).
    """

    def __init__(self, host: str, port: int, extra_hosts: Iterable[str] = ()) -> None:
        self.host = host.strip("[]").lower()
        self.port = port
        self.names = set(LOOPBACK_NAMES) | {self.host} | {h.strip("[]").lower() for h in extra_hosts}
        self.wildcard = self.host in WILDCARD_HOSTS
        if self.wildcard:
            # Bound to every interface (the user asked for it, with a warning): the machine's names are
            # fine, and so is any IP literal: DNS rebinding needs a domain name.
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def allows(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        parsed = split_host(host_header)
        if parsed is None:
            return False
        name, port = parsed
        if port != self.port:
            return False
        return name in self.names or (self.wildcard and _is_ip_literal(name))

    def allows_origin(self, origin: str | None) -> bool:
        """True when ``origin`` (an Origin header, or a Referer URL) is this portal's own origin."""
        if not origin or origin == "null":
            return False
        parts = urlsplit(origin)
        if parts.scheme != "http" or not parts.netloc or "@" in parts.netloc:
            return False
        return self.allows(parts.netloc)

    @property
    def base_url(self) -> str:
        name = "127.0.0.1" if self.wildcard else self.host
        return f"http://{f'[{name}]' if ':' in name else name}:{self.port}"


async def _send_json(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class HostCheckMiddleware:
    """Refuse requests whose Host header does not name this portal (400, JSON message)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = _header(scope, b"host")
            if not self.policy.allows(host):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await _send_json(
                    send,
                    400,
                    error_body(
                        f"The Host header {host!r} does not name this portal, which serves "
                        f"{self.policy.base_url}.",
                        f"Open the portal at {self.policy.base_url}/ (requests through other host names "
                        "are refused to protect it from other web sites).",
                    ),
                )
                return
        await self.app(scope, receive, send)


class RequestTooLarge(StarletteHTTPException):
    """Raised while a body is read past the limit: an HTTPException, so FastAPI's body parsing passes it
    on as it is (413) instead of turning it into a 400 "error parsing the body"."""

    def __init__(self, describe_limit: str) -> None:
        super().__init__(413, f"The request body is larger than the portal accepts ({describe_limit}).")


UPLOAD_HINT = STATUS_HINTS[413]


def _caused_by_limit(exc: BaseException) -> bool:
    if isinstance(exc, RequestTooLarge):
        return True
    inner = getattr(exc, "exceptions", None)  # an exception group from a task group
    if not isinstance(inner, (list, tuple)) or not inner:
        return False
    return all(_caused_by_limit(item) for item in inner)


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413, checking as the body is read."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        describe_limit: str,
        larger: Iterable[tuple[str, int, str, str]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.describe_limit = describe_limit
        # (path suffix, limit, description, hint): dataset uploads may be larger than one image.
        self.larger = tuple(larger)

    def _limit(self, path: str) -> tuple[int, str, str]:
        for suffix, max_bytes, describe, hint in self.larger:
            if path.endswith(suffix):
                return max_bytes, describe, hint
        return self.max_bytes, self.describe_limit, UPLOAD_HINT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, describe_limit, hint = self._limit(scope.get("path", ""))

        async def refuse(send: Send) -> None:
            await _send_json(send, 413, error_body(RequestTooLarge(describe_limit).detail, hint))

        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
            await refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise RequestTooLarge(describe_limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:
            if started or not _caused_by_limit(exc):
                raise
            await refuse(send)


class SecurityHeadersMiddleware:
    """Add CSP, X-Frame-Options, X-Content-Type-Options and Referrer-Policy to every response."""

    _HEADERS = [
        (b"content-security-policy", _CSP.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                extra = [(key, value) for key, value in self._HEADERS if key not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def check_same_origin(request: Request, policy: HostPolicy, token: str) -> None:
    """Raise 403 unless the request comes from one of this portal's pages and carries its token.

    Raises:
        PortalHTTPError: 403, with what was missing or wrong.
    """
    origin = request.headers.get("origin")
    source = origin if origin is not None else request.headers.get("referer")
    if source is None:
        raise PortalHTTPError(
            403,
            "This request changes something but says neither where it comes from (no Origin or Referer "
            "header).",
            hint="Use the buttons of the portal's pages; scripts must send the Origin header of the portal.",
        )
    if not policy.allows_origin(source):
        raise PortalHTTPError(
            403,
            f"This request comes from {source!r}, not from the portal ({policy.base_url}).",
            hint="Only the portal's own pages may cancel runs or upload images.",
        )
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), token.encode()):
        raise PortalHTTPError(
            403,
            f"This request lacks the portal's security token ({CSRF_HEADER} header)"
            if not sent
            else "This request carries a security token that this portal did not issue.",
            hint="Reload the page (the portal may have been restarted) and try again.",
        )


ACCESS_COOKIE = "mb_portal_access"
ACCESS_QUERY = "access_token"
#: Shorter tokens can be guessed by anyone who can reach the port.
MIN_ACCESS_TOKEN_LENGTH = 16


def _without_access_query(scope: Scope) -> str:
    raw = scope.get("query_string", b"").decode("latin-1")
    query = [(k, v) for k, v in parse_qsl(raw, keep_blank_values=True) if k != ACCESS_QUERY]
    path = str(scope.get("path", "/"))
    return path + (f"?{urlencode(query)}" if query else "")


class AccessTokenMiddleware:
    """Require the portal's access token on every request (a portal other machines can reach).

    Accepted: ``Authorization: Bearer TOKEN`` (scripts), or the ``mb_portal_access`` cookie, which a page
    opened once with ``?access_token=TOKEN`` sets (HttpOnly, SameSite=Strict) before redirecting to the
    address without the token. Anything else is 401 with the way in. State-changing requests still need
    the same-origin check and the page's CSRF token on top.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _matches(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(str(value).encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        authorization = _header(scope, b"authorization") or ""
        if authorization.lower().startswith("bearer ") and self._matches(authorization[7:].strip()):
            await self.app(scope, receive, send)
            return
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(_header(scope, b"cookie") or "")
        except CookieError:  # a malformed Cookie header is simply no cookie
            cookies = SimpleCookie()
        if ACCESS_COOKIE in cookies and self._matches(cookies[ACCESS_COOKIE].value):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get(ACCESS_QUERY, [None])[0]
        if scope["type"] == "http" and scope.get("method") == "GET" and self._matches(given):
            cookie = f"{ACCESS_COOKIE}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict"
            await send({"type": "http.response.start", "status": 303, "headers": [
                (b"location", _without_access_query(scope).encode("latin-1")),
                (b"set-cookie", cookie.encode("latin-1")), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _send_json(send, 401, error_body(
            "This portal needs its access token." if not given else "This access token is not the portal's.",
            f"Open the portal once with ?{ACCESS_QUERY}=TOKEN (the value of MODELBUILDER_PORTAL_TOKEN where "
            "it was started), or send the header 'Authorization: Bearer TOKEN'.",
        ))
