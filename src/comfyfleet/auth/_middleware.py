"""ASGI middleware that lets a request through only with a valid API key.

A plain ASGI class, not Starlette's `BaseHTTPMiddleware`: that one runs the app in a separate task
behind memory streams, which breaks streaming answers (SSE), disturbs cancellation and costs time
on every request. Here a request is either answered at once (401, or 503 when the key file cannot
be read) or handed on to the app.

Where a key may come from:

- `Authorization: Bearer KEY`, for HTTP and WebSocket;
- for WebSocket clients that cannot set headers (browsers), a `Sec-WebSocket-Protocol` entry
  `bearer.KEY`: `new WebSocket(url, ["bearer", "bearer." + key])`. When the app accepts without
  choosing a subprotocol and the client offered plain `bearer` too, the middleware answers
  `bearer` (a browser accepts any offered entry, or none); the entry holding the key is never
  echoed back;
- `Authorization: Basic ...` with the key as the password (any user name; a key given as the
  user name with an empty password counts too), for clients that only know Basic auth;
- with browser sessions on (`sessions`), the session cookie that `/login` sets (see `_session`
  and `_login`, which this middleware serves before any key check);
- never the query string: URLs end up in access logs, proxies and browser history.

A browser loading a page (a GET that accepts HTML) with no credentials, or with a session that
ended, is sent to `/login?next=...`; every other client gets the 401 JSON. Credentials a browser
sends by itself (the cookie, remembered Basic credentials) could be made to travel with a request
that another site's page starts (CSRF): a cookie therefore counts for an unsafe request (not GET,
HEAD, OPTIONS) or a WebSocket only with a same-origin `Origin` (or `Sec-Fetch-Site`), and Basic
credentials not when the browser marks the request as cross-site; such a request gets 403
`cross_origin`.

What the app gets: the key's :class:`KeyRecord` under `scope["comfyfleet.key"]` and
`scope["state"]["api_key"]` (`request.state.api_key` in Starlette), and the request *without* its
`Authorization` header, `bearer.KEY` subprotocol entries and session cookie, so that no handler
can log the key or forward it (to a ComfyUI instance, say).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol

from comfyfleet.auth._keys import KeyRecord, key_id_of
from comfyfleet.auth._login import (
    LOGIN_PATH,
    LOGOUT_PATH,
    clear_cookie,
    login_pages,
    redirect_to_login,
    wants_html,
)
from comfyfleet.auth._session import (
    SAFE_METHODS,
    Sessions,
    cross_site,
    header,
    same_origin,
    session_cookie,
    without_session_cookie,
)
from comfyfleet.auth._settings import DEFAULT_PUBLIC_PATHS
from comfyfleet.errors import ComfyfleetError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "comfyfleet.key"
STATE_KEY = "api_key"
PROTOCOL = "bearer"
PROTOCOL_PREFIX = "bearer."
BASIC = "basic"
COOKIE = "cookie"
_HEADER = "header"
_SUBPROTOCOL = "subprotocol"

_CLOSE_POLICY_VIOLATION = 1008
_CLOSE_INTERNAL_ERROR = 1011
_MISSING = "this API needs a key: send the header 'Authorization: Bearer <key>'"
_INVALID = "the API key is not valid (unknown, revoked or expired)"
_UNAVAILABLE = "API keys cannot be checked right now; the server log says why"
_SIGN_IN = " (browsers: sign in at /login)"
_SESSION_ENDED = "the session has ended (signed out, expired, or its key revoked): sign in again"
_CROSS_ORIGIN = (
    "a request that a browser sent with its own credentials (session cookie, Basic) must come "
    "from a page of this site (Origin); send 'Authorization: Bearer <key>' from other clients"
)

logger = logging.getLogger("comfyfleet.auth")


class KeyVerifier(Protocol):
    """What the middleware needs from a key store (:class:`KeyStore` is one)."""

    def verify(self, token: str) -> KeyRecord | None: ...


def key_of(scope: Scope) -> KeyRecord | None:
    """The verified key of a request, for handlers (None where the path is public)."""
    record = scope.get(SCOPE_KEY)
    return record if isinstance(record, KeyRecord) else None


class ApiKeyMiddleware:
    """Answer 401 to `http` and `websocket` requests without a valid key, except on the exact
    paths in `public_paths`. Other scopes (`lifespan`) pass untouched. With `sessions`, browsers
    may sign in at `/login` and use the session cookie instead of a header."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyVerifier,
        public_paths: Iterable[str] = DEFAULT_PUBLIC_PATHS,
        *,
        sessions: Sessions | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.public_paths = frozenset(public_paths)
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path")
        sessions = self.sessions
        if sessions is not None and scope["type"] == "http" and path in (LOGIN_PATH, LOGOUT_PATH):
            await login_pages(scope, receive, send, keys=self.keys.verify, sessions=sessions)
            return
        if path in self.public_paths:
            await self.app(scope, receive, send)
            return
        token, source = _presented_key(scope)
        cookie = session_cookie(scope) if sessions is not None and token is None else None
        try:
            if token is not None:
                record = self.keys.verify(token) if token else None
            else:
                record = sessions.verify(cookie) if sessions is not None and cookie else None
        except ComfyfleetError as exc:
            logger.error("cannot check API keys: %s", exc)
            await _refuse(scope, receive, send, 503, "auth_unavailable", _UNAVAILABLE, [])
            return
        if record is None:
            await self._unauthorized(scope, receive, send, token, cookie)
            return
        if cookie is not None:
            source = COOKIE
        if _forged_by_another_site(scope, source):
            _log_refusal(scope, None, "cross-origin request with browser credentials")
            await _refuse(scope, receive, send, 403, "cross_origin", _CROSS_ORIGIN, [])
            return
        inner = _scope_for_app(scope, record)
        if source == _SUBPROTOCOL and PROTOCOL in inner.get("subprotocols", ()):
            send = _answering_bearer(send)
        await self.app(inner, receive, send)

    async def _unauthorized(
        self, scope: Scope, receive: Receive, send: Send, token: str | None, cookie: str | None
    ) -> None:
        browser = self.sessions is not None
        if browser and token is None and wants_html(scope):
            await redirect_to_login(scope, send, clear=cookie is not None)
            return
        _log_refusal(scope, token, "session ended" if cookie else None)
        challenge = b'Bearer realm="comfyfleet"'
        if token is not None:
            challenge += b', error="invalid_token"'
        if header(scope, b"sec-fetch-mode") is None:  # not a page's script: it may ask Basic
            challenge += b', Basic realm="comfyfleet", charset="UTF-8"'
        if cookie:
            message = _SESSION_ENDED
        else:
            message = _MISSING if token is None else _INVALID
        if browser and token is None:
            message += _SIGN_IN
        headers = [(b"www-authenticate", challenge)]
        if cookie:
            headers.append((b"set-cookie", clear_cookie(scope)))
        await _refuse(scope, receive, send, 401, "unauthorized", message, headers)


def _forged_by_another_site(scope: Scope, source: str) -> bool:
    """Whether credentials the browser adds by itself came with a request that a page of
    another site may have started (see the module docstring)."""
    unsafe = scope["type"] == "websocket" or scope.get("method") not in SAFE_METHODS
    if not unsafe:
        return False
    if source == COOKIE:
        return not same_origin(scope)
    return source == BASIC and cross_site(scope)


def _presented_key(scope: Scope) -> tuple[str | None, str]:
    """(key, where it came from: a Bearer header, Basic or a subprotocol entry). Key None: none
    was sent; "": one was sent that cannot be a key (another scheme, several, unreadable Basic)."""
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"authorization"
    ]
    if values:
        scheme, _, rest = values[0].strip().partition(" ")
        if len(values) > 1:
            return "", _HEADER
        if scheme.lower() == BASIC:
            return _basic_password(rest.strip()), BASIC
        if scheme.lower() != PROTOCOL:
            return "", _HEADER
        return rest.strip(), _HEADER
    if scope["type"] != "websocket":
        return None, _HEADER
    entries = [p for p in scope.get("subprotocols") or () if p.startswith(PROTOCOL_PREFIX)]
    if not entries:
        return None, _HEADER
    return (entries[0][len(PROTOCOL_PREFIX) :] if len(entries) == 1 else ""), _SUBPROTOCOL


def _basic_password(credentials: str) -> str:
    """The key in Basic credentials: the password, or the user name when the password is empty
    (clients that take one token put it either place). "" when unreadable."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    user, _, password = decoded.partition(":")
    return (password or user).strip()


def _scope_for_app(scope: Scope, record: KeyRecord) -> Scope:
    """A copy of the scope with the key's record and without the key's text."""
    headers = without_session_cookie(
        (name, value)
        for name, value in scope.get("headers") or ()
        if name.lower() != b"authorization"
    )
    inner = dict(scope)
    if scope["type"] == "websocket":
        offered = [p for p in scope.get("subprotocols") or () if not p.startswith(PROTOCOL_PREFIX)]
        inner["subprotocols"] = offered
        headers = [(n, v) for n, v in headers if n.lower() != b"sec-websocket-protocol"]
        if offered:
            headers.append((b"sec-websocket-protocol", ", ".join(offered).encode("latin-1")))
    inner["headers"] = headers
    inner["state"] = {**(scope.get("state") or {}), STATE_KEY: record}
    inner[SCOPE_KEY] = record
    return inner


def _answering_bearer(send: Send) -> Send:
    async def send_with_bearer(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": PROTOCOL}
        await send(message)

    return send_with_bearer


def _log_refusal(scope: Scope, token: str | None, why: str | None = None) -> None:
    if why is not None:
        reason = why
    elif token is None:
        reason = "no API key"
    else:
        key_id = key_id_of(token)
        reason = f"invalid API key (id {key_id})" if key_id else "invalid API key"
    client = scope.get("client") or ("-", 0)
    method = scope.get("method", "WEBSOCKET")
    logger.info("refused %s %s from %s: %s", method, scope.get("path"), client[0], reason)


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]],
) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})
        return
    if (await receive())["type"] != "websocket.connect":
        return  # the client left before the handshake
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": head})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        close = _CLOSE_INTERNAL_ERROR if status >= 500 else _CLOSE_POLICY_VIOLATION
        await send({"type": "websocket.close", "code": close, "reason": code})
