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
- never the query string: URLs end up in access logs, proxies and browser history.

What the app gets: the key's :class:`KeyRecord` under `scope["comfyfleet.key"]` and
`scope["state"]["api_key"]` (`request.state.api_key` in Starlette), and the request *without* its
`Authorization` header and `bearer.KEY` subprotocol entries, so that no handler can log the key or
forward it (to a ComfyUI instance, say).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol

from comfyfleet.auth._keys import KeyRecord, key_id_of
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
DEFAULT_PUBLIC_PATHS = ("/health",)

_CLOSE_POLICY_VIOLATION = 1008
_CLOSE_INTERNAL_ERROR = 1011
_MISSING = "this API needs a key: send the header 'Authorization: Bearer <key>'"
_INVALID = "the API key is not valid (unknown, revoked or expired)"
_UNAVAILABLE = "API keys cannot be checked right now; the server log says why"

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
    paths in `public_paths`. Other scopes (`lifespan`) pass untouched."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyVerifier,
        public_paths: Iterable[str] = DEFAULT_PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.keys = keys
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.public_paths:
            await self.app(scope, receive, send)
            return
        token, via_protocol = _presented_key(scope)
        try:
            record = self.keys.verify(token) if token else None
        except ComfyfleetError as exc:
            logger.error("cannot check API keys: %s", exc)
            await _refuse(scope, receive, send, 503, "auth_unavailable", _UNAVAILABLE, [])
            return
        if record is None:
            _log_refusal(scope, token)
            challenge = b'Bearer realm="comfyfleet"'
            if token is not None:
                challenge += b', error="invalid_token"'
            message = _MISSING if token is None else _INVALID
            headers = [(b"www-authenticate", challenge)]
            await _refuse(scope, receive, send, 401, "unauthorized", message, headers)
            return
        inner = _scope_for_app(scope, record)
        if via_protocol and PROTOCOL in inner.get("subprotocols", ()):
            send = _answering_bearer(send)
        await self.app(inner, receive, send)


def _presented_key(scope: Scope) -> tuple[str | None, bool]:
    """(key, came from a subprotocol entry). Key None: none was sent; "": one was sent that
    cannot be a key (another scheme, several of them)."""
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"authorization"
    ]
    if values:
        scheme, _, rest = values[0].strip().partition(" ")
        if len(values) > 1 or scheme.lower() != PROTOCOL:
            return "", False
        return rest.strip(), False
    if scope["type"] != "websocket":
        return None, False
    entries = [p for p in scope.get("subprotocols") or () if p.startswith(PROTOCOL_PREFIX)]
    if not entries:
        return None, False
    return (entries[0][len(PROTOCOL_PREFIX) :] if len(entries) == 1 else ""), True


def _scope_for_app(scope: Scope, record: KeyRecord) -> Scope:
    """A copy of the scope with the key's record and without the key's text."""
    headers = [
        (name, value)
        for name, value in scope.get("headers") or ()
        if name.lower() != b"authorization"
    ]
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


def _log_refusal(scope: Scope, token: str | None) -> None:
    if token is None:
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
        close = _CLOSE_POLICY_VIOLATION if status == 401 else _CLOSE_INTERNAL_ERROR
        await send({"type": "websocket.close", "code": close, "reason": code})
