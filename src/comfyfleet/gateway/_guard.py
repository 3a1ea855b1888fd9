"""The outermost layer of the gateway: a time limit on request bodies, and one log line for
every failure that comes out of the app.

A body must keep arriving: a client that declares 100 bytes and sends 2 would otherwise hold a
connection (and, for an upload, a temp file) for as long as it likes. Each wait for the next part
of a body is limited to `body_timeout_s`; past it the route that reads the body gets a 408 (with
`Connection: close`, since the rest of the body may still come).

A client that goes away mid-request is routine: one line at info level. Anything else that
escapes a route is a server fault: it is logged once with its traceback and answered 500 in the
error shape (a socket is closed with 1011), and swallowed here, so the server neither logs it a
second time nor drops the connection.

It is added with `app.add_middleware`, inside starlette's own outermost layer, so that it sees
a route's failure first and the app stays a `FastAPI` that callers can add routes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfyfleet.gateway._errors import ApiError, error_response

log = logging.getLogger("comfyfleet.gateway")


class RequestGuard:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, body_timeout_s: float) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(send)
        if scope["type"] == "http":
            receive = _timed(receive, self.body_timeout_s)
        try:
            await self.app(scope, receive, exchange.send)
        except ClientDisconnect:
            log.info("%s: the client went away before its request was read", _what(scope))
        except Exception:
            log.error("%s failed", _what(scope), exc_info=True)
            await exchange.fail(scope)


class _Exchange:
    """The send side of one request, remembering whether an answer has started."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] in ("http.response.start", "websocket.accept", "websocket.close"):
            self.started = True
        await self._send(message)

    async def fail(self, scope: Scope) -> None:
        """Answer a failure the app did not answer: 500, or close a socket with 1011."""
        if self.started:
            return
        with contextlib.suppress(Exception):  # the client may be gone as well
            if scope["type"] == "websocket":
                await self._send({"type": "websocket.close", "code": 1011, "reason": ""})
                return
            response = error_response(
                500,
                "internal_error",
                "the server failed to answer this request; the failure is in its log",
                {"method": scope.get("method"), "path": scope.get("path")},
            )
            await response(scope, _nothing, self._send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def _timed(receive: Receive, timeout_s: float) -> Receive:
    """`receive` with each wait for more of the body limited to `timeout_s` seconds."""
    complete = False

    async def timed() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout(timeout_s):
                message = await receive()
        except TimeoutError:
            raise ApiError(
                408,
                "body_timeout",
                f"no part of the request body arrived for {timeout_s:g}s",
                {"setting": "serve.body_timeout_s"},
                headers={"Connection": "close"},
            ) from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return timed


def _what(scope: Scope) -> str:
    path = scope.get("path", "")
    return f"{scope.get('method', 'WEBSOCKET')} {path[:200]!r}"
