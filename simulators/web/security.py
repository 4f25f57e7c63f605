"""Web security of the console and the REST API: CSRF, upload limits, headers.

CSRF has two layers (docs/web.md explains the choice):

1. **Origin check, every unsafe method, every route** (:class:`OriginGuard`). A browser
   always says where a request comes from: ``Sec-Fetch-Site`` (Chromium, Firefox,
   Safari on HTTPS) and ``Origin`` (every cross-origin POST; ``null`` from sandboxed or
   privacy-stripped pages). A request whose ``Sec-Fetch-Site`` is not ``same-origin``
   or ``none``, or whose ``Origin`` is not this server's own, is refused with 403.
   Command-line clients (curl, httpx, a CI job) send neither header and pass: the
   simulator has no login, so there is no ambient credential for them to abuse.
2. **A per-session token on the console's forms** (double-submit cookie). The first
   console page sets the ``__Host-segur_sim_csrf`` cookie (random, ``Secure``,
   ``HttpOnly``, ``SameSite=Strict``, ``Path=/``); every console form carries the same
   value in a hidden ``csrf_token`` field (or the ``X-CSRF-Token`` header from script).
   A state-changing console route refuses a request whose field does not match the
   cookie. Another page cannot read the cookie, so it cannot forge the field.

Uploads are size-limited by :class:`BodyLimit`: a body over the limit gets 413 with a
JSON error, before the route reads it (``Content-Length``) or while it streams
(chunked bodies).
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Iterable
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "__Host-segur_sim_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024

# The console's own pages: scripts and styles only from /static, no inline script,
# frames only from this origin (the sandboxed mail HTML view).
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)
# HTML taken from a mail: nothing runs, nothing loads (inline styles only), and the
# ``sandbox`` directive gives it an opaque origin even when opened outside the iframe.
MAIL_HTML_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox"
)
# Reports produced by the validators and the CNDA mock: inline styles, no script.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def _json_response_parts(status: int, detail: str) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def own_origin(scope: Scope) -> str:
    host = _header(scope, b"host")
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
    return f"{scope.get('scheme', 'http')}://{host}".lower()


def cross_site_reason(scope: Scope) -> str | None:
    """Why this request looks like it came from another site, or None."""
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    origin = _header(scope, b"origin")
    if origin is not None and origin.lower().rstrip("/") != own_origin(scope):
        return f"cross-origin request refused (Origin: {origin})"
    return None


class OriginGuard:
    """Refuse unsafe methods coming from another origin (403, JSON)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method", "GET") not in SAFE_METHODS:
            reason = cross_site_reason(scope)
            if reason is not None:
                start, body = _json_response_parts(403, reason)
                await send(start)
                await send(body)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 with a JSON error for a request body over ``limit`` on the given paths."""

    def __init__(self, app: ASGIApp, *, limit: int, prefixes: Iterable[str]) -> None:
        self.app = app
        self.limit = limit
        self.prefixes = tuple(prefixes)

    def _applies(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method", "GET") in SAFE_METHODS:
            return False
        path = str(scope.get("path", ""))
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than the limit of {self.limit} bytes"
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.limit:
            start, body = _json_response_parts(413, too_large)
            await send(start)
            await send(body)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # An HTTPException: the app's handler turns it into JSON.
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)


# ---- the console's double-submit token ------------------------------------------------------
def csrf_token_of(request: Request) -> str:
    """The session's token: the cookie's, or a new one (set by :func:`set_csrf_cookie`)."""
    token = request.cookies.get(CSRF_COOKIE)
    if token and 20 <= len(token) <= 128:
        return token
    existing = getattr(request.state, "new_csrf_token", None)
    if existing:
        return str(existing)
    token = secrets.token_urlsafe(32)
    request.state.new_csrf_token = token
    return token


def set_csrf_cookie(request: Request, response: Any) -> None:
    new = getattr(request.state, "new_csrf_token", None)
    if new:
        response.set_cookie(
            CSRF_COOKIE, new, secure=True, httponly=True, samesite="strict", path="/"
        )


async def check_csrf(request: Request) -> None:
    """FastAPI dependency of every state-changing console route."""
    reason = cross_site_reason(request.scope)
    if reason is not None:
        raise HTTPException(403, reason)
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    sent = request.headers.get(CSRF_HEADER) or ""
    if not sent:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else ""
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise HTTPException(
            403,
            "CSRF token missing or wrong: reload the console page and submit its form again",
        )
