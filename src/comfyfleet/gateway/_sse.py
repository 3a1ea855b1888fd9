"""`text/event-stream` answers: a response that streams an async generator's messages and ends
(closing the generator) the moment the client goes away, whatever ASGI version the server has.
Every SSE route (the native one, Comfy API v2's) answers with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping

from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("comfyfleet.gateway")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(Response):
    """`text/event-stream` from an async generator of ready-made message bytes, ended (and the
    generator closed) as soon as the client disconnects, whatever ASGI version the server has."""

    media_type = "text/event-stream"

    def __init__(
        self,
        messages: AsyncGenerator[bytes, None],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.messages = messages
        self.on_close = on_close
        """Called once the response is over, however it ended (a stream slot's release)."""
        self.status_code = status_code
        self.background = None
        self.init_headers({**STREAM_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._respond(receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()

    async def _respond(self, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        streaming = asyncio.create_task(self._stream(send))
        watching = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((streaming, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, watching):
                task.cancel()
            await asyncio.gather(streaming, watching, return_exceptions=True)
        failure = None if streaming.cancelled() else streaming.exception()
        if failure is not None and not isinstance(failure, OSError):
            raise failure  # a bug: let the server log it (the client went away otherwise)

    async def _stream(self, send: Send) -> None:
        async with contextlib.aclosing(self.messages) as messages:
            async for chunk in messages:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
