"""Refusals of the proxies, in the gateway's error shape, for HTTP and WebSocket alike.

The proxies are plain ASGI apps: an `ApiError` raised from a WebSocket endpoint would reach no
handler that can answer a socket, so they answer here. A WebSocket is refused before its
handshake completes, with the same status and JSON body as HTTP where the server can send an
HTTP answer to a handshake (the ASGI `websocket.http.response` extension, which uvicorn has),
and otherwise closed with 1008 (a client's fault) or 1011 (the server's or an instance's).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CLOSE_POLICY_VIOLATION = 1008
_CLOSE_INTERNAL_ERROR = 1011


class ProxyError(Exception):
    """A request the proxy does not hand on: `status`, `code` and `message` as the gateway's
    errors have them."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> bytes:
        error = {"code": self.code, "message": self.message, "details": self.details}
        return json.dumps({"error": error}).encode()


def not_found() -> ProxyError:
    """What the gateway answers a path it has no route for."""
    return ProxyError(404, "not_found", "Not Found")


async def refuse(
    scope: Scope, receive: Receive, send: Send, error: ProxyError, *, connected: bool = False
) -> None:
    """Answer `error`; for a WebSocket whose `websocket.connect` was already received, pass
    `connected`."""
    body = error.body()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": error.status, "headers": head})
        await send({"type": "http.response.body", "body": body})
        return
    if not connected and (await receive())["type"] != "websocket.connect":
        return  # the client left before the handshake
    if "websocket.http.response" in (scope.get("extensions") or {}):
        start = {"type": "websocket.http.response.start", "status": error.status, "headers": head}
        await send(start)
        await send({"type": "websocket.http.response.body", "body": body})
        return
    code = _CLOSE_INTERNAL_ERROR if error.status >= 500 else _CLOSE_POLICY_VIOLATION
    await send({"type": "websocket.close", "code": code, "reason": error.code})
