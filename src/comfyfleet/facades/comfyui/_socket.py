"""`GET /ws?clientId=C`: ComfyUI's WebSocket, fed by the `SocketHub`.

On connect: the `status` message with the fleet's `queue_remaining` and the socket's `sid` (the
client's id, or a new one). Then every message of the client's prompts (see `_hub`), and
`status` on every queue change. A client may announce `feature_flags` as current ComfyUI
clients do; the server answers with its own, and sends preview frames with metadata to clients
that support them. A client that stops reading is disconnected once its outbox is full (1008);
the gateway shutting down closes every socket (1012).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from comfyfleet.auth import READ
from comfyfleet.facades.comfyui._hub import Listener, SocketHub, drain, feature_flags
from comfyfleet.facades.comfyui._messages import status_message, text
from comfyfleet.gateway import socket_caller

_CLOSE_TOO_SLOW = 1008
_CLOSE_RESTART = 1012
_CLOSE_WAIT_S = 2.0
_MAX_CLIENT_MESSAGE = 64 * 1024


async def serve_socket(
    websocket: WebSocket, hub: SocketHub, closing: asyncio.Event, server_flags: dict[str, object]
) -> None:
    caller = await socket_caller(websocket, READ)
    if caller is None:
        return
    await websocket.accept()
    sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
    listener = hub.connect(sid, caller)
    tasks: list[asyncio.Task[object]] = []
    try:
        await websocket.send_text(status_message(await hub.queue_remaining(), sid))

        async def write(message: str | bytes) -> None:
            if isinstance(message, str):
                await websocket.send_text(message)
            else:
                await websocket.send_bytes(message)

        tasks = [
            asyncio.create_task(drain(listener, write)),
            asyncio.create_task(_read(websocket, listener, server_flags)),
            asyncio.create_task(closing.wait()),
            asyncio.create_task(listener.dropped.wait()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        hub.disconnect(listener)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        code = _CLOSE_TOO_SLOW if listener.dropped.is_set() else _CLOSE_RESTART
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await websocket.close(code)


async def _read(websocket: WebSocket, listener: Listener, server_flags: dict[str, object]) -> None:
    """Client messages: only `feature_flags` means something; the rest is ignored, as ComfyUI
    ignores it. Returns when the client goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        if not isinstance(raw, str) or len(raw) > _MAX_CLIENT_MESSAGE:
            continue
        try:
            flags = feature_flags(json.loads(raw))
        except ValueError:
            continue
        if flags is not None:
            listener.metadata_previews = bool(flags.get("supports_preview_metadata"))
            listener.offer(text("feature_flags", dict(server_flags)))
