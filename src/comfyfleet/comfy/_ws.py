"""Following one ComfyUI instance's WebSocket: progress, outputs and previews as they happen.

ComfyUI's `/ws?clientId=C` stream carries the events of prompts queued with `client_id: C` (plus
broadcast queue status). It is a live feed with no replay: whatever is sent while the socket is
down is gone. So :class:`ComfyEvents` never hides a gap. It reconnects on its own, forever, but
yields :class:`Disconnected` when the stream breaks and :class:`Connected` when it is back, and a
caller that tracks prompts must then ask /history about the ones it was waiting for.

The connection is an injectable seam (:class:`WebSocketLike`), so tests feed frames without a
server and nothing here depends on how the socket is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
from websockets.exceptions import WebSocketException

_T = TypeVar("_T")

TERMINAL_TYPES = frozenset({"execution_success", "execution_error", "execution_interrupted"})
"""Message types after which ComfyUI sends nothing more about that prompt's execution."""

# Binary frames: a 4-byte big-endian event type, then the payload (server.py `encode_bytes`).
# PREVIEW_IMAGE's payload starts with a 4-byte image format. We never announce the
# `supports_preview_metadata` feature flag, so ComfyUI sends previews in this legacy shape and
# not as PREVIEW_IMAGE_WITH_METADATA (4); other binary events (TEXT = 3) are skipped.
_PREVIEW_IMAGE = 1
_IMAGE_FORMATS = {1: "jpeg", 2: "png"}
_HEADER = struct.Struct(">I")

# What a dropped or refused connection raises: OS-level errors and timeouts from the socket, and
# websockets' own ConnectionClosed / InvalidHandshake / InvalidStatus family.
_NETWORK_ERRORS = (OSError, TimeoutError, EOFError, WebSocketException)


class WebSocketLike(Protocol):
    """The two calls ComfyEvents makes on a connection (websockets' ClientConnection fits)."""

    async def recv(self) -> str | bytes: ...

    async def close(self) -> None: ...


Connect = Callable[[str], Awaitable[WebSocketLike]]


@dataclass(frozen=True)
class ComfyMessage:
    """One JSON event, `{"type": ..., "data": {...}}`; `prompt_id` is lifted out of the data
    because routing by prompt is what every consumer does first (None for broadcast status)."""

    type: str
    data: dict[str, Any]
    prompt_id: str | None

    @property
    def is_terminal(self) -> bool:
        """True for success, error and interruption: the prompt's last execution event."""
        return self.type in TERMINAL_TYPES

    @property
    def node(self) -> str | None:
        """The node the event is about (`node`, else `node_id`), when it names one."""
        node = self.data.get("node", self.data.get("node_id"))
        return None if node is None else str(node)


@dataclass(frozen=True)
class PreviewFrame:
    """A sampler preview image; ComfyUI does not say which prompt or node it belongs to, so it is
    the one that most recently sent `progress` on this client's stream."""

    image_format: str
    data: bytes


@dataclass(frozen=True)
class Connected:
    """The stream is (re)open: events from here on arrive; those during a gap are lost."""


@dataclass(frozen=True)
class Disconnected:
    """The stream broke (or the first connect failed); yielded once per gap, not per retry."""

    reason: str


StreamItem = ComfyMessage | PreviewFrame | Connected | Disconnected


class _Closed(Exception):
    """aclose() was called while we were waiting; internal, never escapes __anext__."""


def ws_url(base_url: str, client_id: str) -> str:
    """`http://h:p/prefix` -> `ws://h:p/prefix/ws?clientId=...` (https -> wss)."""
    parts = urlsplit(base_url.rstrip("/"))
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"not an http(s) or ws(s) URL: {base_url!r}")
    query = "clientId=" + quote(client_id, safe="")
    return urlunsplit((schemes[parts.scheme], parts.netloc, parts.path + "/ws", query, ""))


async def _connect_websockets(url: str) -> WebSocketLike:
    # Imported here so importing comfyfleet.comfy stays cheap for code that never streams.
    from websockets.asyncio.client import connect

    # max_size=None: the peer is our own ComfyUI, and a cap would only turn a big preview into a
    # disconnect. proxy=None: like the HTTP client, never route to a local instance via a proxy.
    return await connect(url, max_size=None, ping_interval=20, ping_timeout=20, proxy=None)


class ComfyEvents:
    """The events of one client id on one instance: `async for item in ComfyEvents(...):`.

    Reconnects with capped exponential backoff until :meth:`aclose`, which ends the iteration
    promptly from any task, also mid-wait. One consumer at a time; frames that cannot be parsed
    are skipped (and counted in `skipped_frames`) rather than ending the stream. `connect` opens
    a socket for the URL and `sleep` waits out a backoff delay: seams for tests and other stacks.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        *,
        connect: Connect | None = None,
        reconnect_initial_s: float = 0.2,
        reconnect_max_s: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = ws_url(base_url, client_id)
        self.client_id = client_id
        self.skipped_frames = 0
        self._connect = connect or _connect_websockets
        self._sleep = sleep
        self._initial = reconnect_initial_s
        self._max = max(reconnect_max_s, reconnect_initial_s)
        self._delay = reconnect_initial_s
        self._conn: WebSocketLike | None = None
        self._closing = asyncio.Event()
        self._waits: set[asyncio.Future[Any]] = set()
        self._in_gap = False  # a Disconnected was yielded and no Connected since
        self._retry = False  # the next connect attempt must wait out the backoff first
        self._wake = asyncio.Event()

    def __aiter__(self) -> ComfyEvents:
        return self

    async def __aenter__(self) -> ComfyEvents:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    async def aclose(self) -> None:
        """Stop for good: close the socket and end the iteration, even one waiting right now."""
        self._closing.set()
        for task in list(self._waits):
            task.cancel()
        await self._drop()

    def reconnect(self) -> None:
        """Open a fresh socket now, instead of waiting out the backoff or trusting the open one.

        For an instance that is known to be back (its supervisor saw it serve again): a fast
        restart can be serving before the old socket's close is noticed, and prompts sent then
        would be heard by nobody. The open socket (if any) is closed, which the iteration reports
        as `Disconnected`; the next `Connected` is the new process's."""
        self._delay = self._initial
        conn = self._conn
        if conn is not None:
            closing = asyncio.ensure_future(_close_quietly(conn))
            self._waits.add(closing)
            closing.add_done_callback(self._waits.discard)
        self._wake.set()

    async def __anext__(self) -> StreamItem:
        while not self.closed:
            try:
                item = await (self._open() if self._conn is None else self._receive(self._conn))
            except _Closed:
                break
            if item is not None and not self.closed:
                return item
        await self._drop()
        raise StopAsyncIteration

    async def _open(self) -> Connected | Disconnected | None:
        if self._retry:
            await self._unless_closed(self._backoff(self._delay))
            self._delay = min(self._delay * 2, self._max)
        try:
            conn = await self._unless_closed(self._connect(self.url))
        except _NETWORK_ERRORS as exc:
            self._retry = True
            if self._in_gap:
                return None  # still the same gap; the caller already knows
            self._in_gap = True
            return Disconnected(f"cannot connect to {self.url}: {_reason(exc)}")
        if self.closed:  # aclose() raced the handshake: do not leak the socket
            await _close_quietly(conn)
            raise _Closed
        self._conn = conn
        self._in_gap = self._retry = False
        self._delay = self._initial
        return Connected()

    async def _backoff(self, delay: float) -> None:
        """`sleep(delay)`, cut short by `reconnect`."""
        self._wake.clear()
        sleeping = asyncio.ensure_future(self._sleep(delay))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, woken):
                task.cancel()

    async def _receive(
        self, conn: WebSocketLike
    ) -> ComfyMessage | PreviewFrame | Disconnected | None:
        try:
            frame = await self._unless_closed(conn.recv())
        except _NETWORK_ERRORS as exc:
            await self._drop()
            self._in_gap = self._retry = True
            return Disconnected(f"connection to {self.url} lost: {_reason(exc)}")
        item = _parse(frame)
        if item is None:
            self.skipped_frames += 1
            logging.getLogger(__name__).debug("skipped a frame from %s: %.200r", self.url, frame)
        return item

    async def _unless_closed(self, awaitable: Awaitable[_T]) -> _T:
        """Await `awaitable`, but give up (raising _Closed) as soon as aclose() is called,
        which cancels it. One task per wait, and no second waiter: this runs for every frame."""
        if self.closed:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never started; closing it avoids a "never awaited" warning
            raise _Closed
        task = asyncio.ensure_future(awaitable)
        self._waits.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.closed and task.cancelled() and (current is None or not current.cancelling()):
                raise _Closed from None
            raise
        finally:
            self._waits.discard(task)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _close_quietly(conn: WebSocketLike) -> None:
    with contextlib.suppress(*_NETWORK_ERRORS):
        await conn.close()


def _parse(frame: str | bytes) -> ComfyMessage | PreviewFrame | None:
    """A frame as the caller wants it, or None for anything malformed or not of interest."""
    if isinstance(frame, str):
        return _parse_text(frame)
    return _parse_binary(bytes(frame))


def _parse_text(text: str) -> ComfyMessage | None:
    try:
        message = orjson.loads(text)  # a job brings a dozen of these: the fast parser first
    except orjson.JSONDecodeError:
        try:  # what only Python's parser takes (NaN, which ComfyUI's json.dumps may write)
            message = json.loads(text)
        except ValueError:
            return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    data = message.get("data")
    data = data if isinstance(data, dict) else {}
    prompt_id = data.get("prompt_id")
    return ComfyMessage(
        type=message["type"],
        data=data,
        prompt_id=prompt_id if isinstance(prompt_id, str) else None,
    )


def _parse_binary(frame: bytes) -> PreviewFrame | None:
    if len(frame) < 2 * _HEADER.size:
        return None
    (event,) = _HEADER.unpack_from(frame, 0)
    (image_format,) = _HEADER.unpack_from(frame, _HEADER.size)
    if event != _PREVIEW_IMAGE or image_format not in _IMAGE_FORMATS:
        return None
    return PreviewFrame(image_format=_IMAGE_FORMATS[image_format], data=frame[2 * _HEADER.size :])
