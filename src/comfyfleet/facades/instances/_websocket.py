"""A WebSocket bridged to an instance: frames both ways, text and binary, as they come.

The upstream socket is opened first, so that an instance that cannot be reached or refuses is
a refused handshake (502, in the error shape) rather than a socket that opens and dies; the
client's socket is then accepted with the subprotocol the instance chose.

Memory stays bounded in both directions: each pump awaits the other side's `send`, which waits
while that side's socket is full, and the upstream connection keeps at most `max_queue` frames
of at most `max_size` bytes before it stops reading from the instance. A client that does not
read therefore stalls its instance's socket (ComfyUI drops slow clients' messages on its side),
not the gateway's memory.

Whichever side closes first, the other is closed with the same code (1005/1006, which may not be
sent, become 1000 and 1011).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin, Subprotocol

from comfyfleet.facades.instances._errors import ProxyError, refuse
from comfyfleet.facades.instances._headers import origin_of, request_headers, upstream_url

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_QUEUED_FRAMES = 4
_NOT_SENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}

log = logging.getLogger("comfyfleet.gateway")


async def bridge_websocket(
    scope: Scope, receive: Receive, send: Send, *, base_url: str, path: bytes, prefix: str
) -> None:
    """Bridge the client's WebSocket to `path` (raw, from `/`) on the instance at `base_url`."""
    if (await receive())["type"] != "websocket.connect":
        return
    url = upstream_url(base_url, path, scope.get("query_string") or b"", websocket=True)
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in request_headers(scope, base_url=base_url, prefix=prefix)
        if k != b"origin"
    ]
    has_origin = any(name.lower() == b"origin" for name, _ in scope.get("headers") or ())
    offered = [Subprotocol(p) for p in scope.get("subprotocols") or ()]
    try:
        upstream = await connect(
            url,
            origin=Origin(origin_of(base_url)) if has_origin else None,
            subprotocols=offered or None,
            additional_headers=headers,
            user_agent_header=None,
            compression=None,
            proxy=None,
            open_timeout=10,
            ping_interval=None,
            max_size=MAX_FRAME_BYTES,
            max_queue=MAX_QUEUED_FRAMES,
        )
    except InvalidStatus as exc:
        error = ProxyError(
            502,
            "instance_refused",
            f"the instance refused the WebSocket ({exc.response.status_code})",
            {"url": base_url, "status": exc.response.status_code},
        )
        await refuse(scope, receive, send, error, connected=True)
        return
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        error = ProxyError(
            502,
            "instance_unreachable",
            f"the instance could not be reached ({type(exc).__name__})",
            {"url": base_url},
        )
        await refuse(scope, receive, send, error, connected=True)
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
    await _pump_both(upstream, receive, send)


async def _pump_both(upstream: ClientConnection, receive: Receive, send: Send) -> None:
    to_upstream = asyncio.ensure_future(_client_to_upstream(receive, upstream))
    to_client = asyncio.ensure_future(_upstream_to_client(upstream, send))
    try:
        done, _ = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
    code = _client_close_code(to_upstream) if to_upstream in done else None
    if code is not None:  # the client closed: close the instance's side alike
        await upstream.close(_NOT_SENDABLE.get(code, code) if 1000 <= code < 5000 else 1000)
        return
    await upstream.close()
    code = upstream.close_code if upstream.close_code is not None else 1006
    close = {"code": _NOT_SENDABLE.get(code, code), "reason": upstream.close_reason or ""}
    try:
        await send({"type": "websocket.close", **close})
    except (OSError, RuntimeError):
        pass  # the client is gone too


def _client_close_code(pump: asyncio.Future[int]) -> int | None:
    """The client's close code when the pump ended because the client left."""
    if pump.cancelled() or pump.exception() is not None or pump.result() < 0:
        return None
    return pump.result()


async def _client_to_upstream(receive: Receive, upstream: ClientConnection) -> int:
    """Frames from the client to the instance until the client leaves; its close code."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return int(message.get("code") or 1000)
        if message["type"] != "websocket.receive":
            continue
        text = message.get("text")
        data = text if text is not None else message.get("bytes")
        if data is not None:
            try:
                await upstream.send(data)
            except ConnectionClosed:
                return -1  # the other pump sees the instance's close


async def _upstream_to_client(upstream: ClientConnection, send: Send) -> None:
    """Frames from the instance to the client until the instance closes."""
    try:
        async for data in upstream:
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": bytes(data)})
    except ConnectionClosed:
        pass
