"""ComfyEvents against scripted connections (frames shaped like ComfyUI 0.3.75's) and one real
websockets server, to check the reconnect path end to end."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from comfyfleet.comfy import (
    ComfyEvents,
    ComfyMessage,
    Connected,
    Disconnected,
    PreviewFrame,
    StreamItem,
)
from comfyfleet.comfy._ws import ws_url

pytestmark = pytest.mark.anyio

BASE = "http://comfy.test:8188"
HANG = object()  # a script entry: recv() waits until the socket is closed


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeSocket:
    """Plays a script: frames are returned, exceptions raised, HANG blocks; then it hangs."""

    def __init__(self, *script: object) -> None:
        self.script = list(script)
        self.closed = asyncio.Event()

    async def recv(self) -> str | bytes:
        step = self.script.pop(0) if self.script else HANG
        if isinstance(step, BaseException):
            raise step
        if step is HANG:
            await self.closed.wait()
            raise ConnectionResetError("closed while waiting")
        assert isinstance(step, str | bytes)
        return step

    async def close(self) -> None:
        self.closed.set()


class FakeConnect:
    """Hands out the given sockets (or raises the given errors), one per connect call."""

    def __init__(self, *outcomes: FakeSocket | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.urls: list[str] = []

    async def __call__(self, url: str) -> FakeSocket:
        self.urls.append(url)
        outcome = self.outcomes.pop(0) if self.outcomes else ConnectionRefusedError("no more")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Sleeps:
    """Records the backoff delays without waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def text(type_: str, **data: Any) -> str:
    return json.dumps({"type": type_, "data": data})


def preview(image_format: int, payload: bytes, event: int = 1) -> bytes:
    return struct.pack(">II", event, image_format) + payload


async def take(events: ComfyEvents, count: int) -> list[StreamItem]:
    items: list[StreamItem] = []
    async with asyncio.timeout(5):
        async for item in events:
            items.append(item)
            if len(items) == count:
                break
    return items


async def test_text_frames_become_messages_with_their_prompt_id() -> None:
    sock = FakeSocket(
        text("status", status={"exec_info": {"queue_remaining": 0}}, sid="c1"),
        text("execution_start", prompt_id="p1", timestamp=1),
        text("executing", node="3", display_node="3", prompt_id="p1"),
        text("progress", value=1, max=4, prompt_id="p1", node="3"),
        text("execution_success", prompt_id="p1", timestamp=2),
    )
    connect = FakeConnect(sock)
    events = ComfyEvents(BASE, "c1", connect=connect)
    items = await take(events, 6)
    await events.aclose()

    assert connect.urls == ["ws://comfy.test:8188/ws?clientId=c1"]
    assert items[0] == Connected()
    messages = [item for item in items if isinstance(item, ComfyMessage)]
    assert [(m.type, m.prompt_id) for m in messages] == [
        ("status", None),
        ("execution_start", "p1"),
        ("executing", "p1"),
        ("progress", "p1"),
        ("execution_success", "p1"),
    ]
    assert messages[0].data["status"]["exec_info"]["queue_remaining"] == 0
    assert messages[3].data["value"] == 1 and messages[3].node == "3"
    assert [m.is_terminal for m in messages] == [False, False, False, False, True]
    assert sock.closed.is_set()


@pytest.mark.parametrize("type_", ["execution_success", "execution_error", "execution_interrupted"])
def test_terminal_types(type_: str) -> None:
    assert ComfyMessage(type_, {"prompt_id": "p"}, "p").is_terminal
    assert not ComfyMessage("executed", {"prompt_id": "p"}, "p").is_terminal


async def test_binary_previews_are_parsed_and_other_binary_events_skipped() -> None:
    events = ComfyEvents(
        BASE,
        "c1",
        connect=FakeConnect(
            FakeSocket(
                preview(1, b"\xff\xd8jpeg-bytes"),
                struct.pack(">I", 3) + b"\x00\x00\x00\x013text",  # TEXT: not a preview
                preview(2, b"\x89PNG-bytes"),
                preview(9, b"?"),  # an image format we do not know
                b"\x00\x00",  # too short to carry a header
            )
        ),
    )
    items = await take(events, 3)
    await events.aclose()
    assert items[1:] == [
        PreviewFrame(image_format="jpeg", data=b"\xff\xd8jpeg-bytes"),
        PreviewFrame(image_format="png", data=b"\x89PNG-bytes"),
    ]


async def test_malformed_frames_are_skipped_not_fatal() -> None:
    sock = FakeSocket(
        "{not json",
        "[1, 2]",
        json.dumps({"data": {}}),  # no type
        json.dumps({"type": "executing", "data": None}),
        text("executed", node="9", output={"images": []}, prompt_id="p1"),
    )
    events = ComfyEvents(BASE, "c1", connect=FakeConnect(sock))
    items = await take(events, 3)
    await events.aclose()
    assert items[1] == ComfyMessage("executing", {}, None)
    assert isinstance(items[2], ComfyMessage) and items[2].type == "executed"
    assert items[2].node == "9"
    assert events.skipped_frames == 3


async def test_a_drop_is_reported_once_and_backoff_grows_until_it_reconnects() -> None:
    sleeps = Sleeps()
    first = FakeSocket(text("execution_start", prompt_id="p1"), ConnectionResetError("reset"))
    second = FakeSocket(text("execution_success", prompt_id="p1"), ConnectionResetError("again"))
    third = FakeSocket()
    refused = ConnectionRefusedError("refused")
    connect = FakeConnect(first, refused, refused, refused, second, third)
    events = ComfyEvents(
        BASE,
        "c1",
        connect=connect,
        reconnect_initial_s=0.01,
        reconnect_max_s=0.04,
        sleep=sleeps,
    )
    items = await take(events, 7)
    await events.aclose()

    kinds = [type(item).__name__ for item in items]
    assert kinds == [
        "Connected",
        "ComfyMessage",
        "Disconnected",
        "Connected",
        "ComfyMessage",
        "Disconnected",
        "Connected",
    ]
    assert isinstance(items[2], Disconnected)
    assert "ConnectionResetError: reset" in items[2].reason
    # Three refusals after the first drop: 0.01, 0.02, 0.04, capped at 0.04; a success resets it.
    assert sleeps.delays == [0.01, 0.02, 0.04, 0.04, 0.01]
    assert first.closed.is_set() and second.closed.is_set() and third.closed.is_set()
    assert len(connect.urls) == 6


async def test_a_first_connect_that_fails_says_disconnected_once() -> None:
    sleeps = Sleeps()
    refused = ConnectionRefusedError("refused")
    events = ComfyEvents(
        BASE, "c1", connect=FakeConnect(refused, TimeoutError(), FakeSocket()), sleep=sleeps
    )
    items = await take(events, 2)
    await events.aclose()
    assert isinstance(items[0], Disconnected)
    assert items[0].reason.startswith("cannot connect to ws://comfy.test:8188/ws?clientId=c1")
    assert items[1] == Connected()
    assert sleeps.delays == [0.2, 0.4]


async def _drain(events: ComfyEvents, seen: list[StreamItem]) -> None:
    async for item in events:
        seen.append(item)


async def test_aclose_during_backoff_ends_the_iteration_quickly() -> None:
    events = ComfyEvents(
        BASE, "c1", connect=FakeConnect(ConnectionRefusedError("down")), reconnect_initial_s=30
    )
    seen: list[StreamItem] = []
    consumer = asyncio.create_task(_drain(events, seen))
    async with asyncio.timeout(5):
        while not seen:
            await asyncio.sleep(0.001)
        assert isinstance(seen[0], Disconnected)
        await asyncio.sleep(0.01)  # now inside the 30 s backoff
        started = time.monotonic()
        await events.aclose()
        await consumer
    assert time.monotonic() - started < 0.5
    assert events.closed


async def test_aclose_while_waiting_for_a_frame_ends_the_iteration_and_closes() -> None:
    sock = FakeSocket(HANG)
    events = ComfyEvents(BASE, "c1", connect=FakeConnect(sock))
    seen: list[StreamItem] = []
    consumer = asyncio.create_task(_drain(events, seen))
    async with asyncio.timeout(5):
        while not seen:
            await asyncio.sleep(0.001)
        await events.aclose()
        await consumer
    assert seen == [Connected()]
    assert sock.closed.is_set()
    with pytest.raises(StopAsyncIteration):
        await events.__anext__()


async def test_async_with_closes_the_stream() -> None:
    sock = FakeSocket(text("status", status={}))
    async with ComfyEvents(BASE, "c1", connect=FakeConnect(sock)) as events:
        assert await events.__anext__() == Connected()
    assert sock.closed.is_set() and events.closed


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:8188", "ws://127.0.0.1:8188/ws?clientId=a%2Fb"),
        ("https://gpu.example/comfy/", "wss://gpu.example/comfy/ws?clientId=a%2Fb"),
    ],
)
def test_the_url_follows_the_base_url(base: str, url: str) -> None:
    assert ws_url(base, "a/b") == url


def test_a_base_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        ComfyEvents("127.0.0.1:8188", "c1")


async def test_a_real_server_drop_then_reconnect() -> None:
    paths: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        paths.append(ws.request.path)
        if len(paths) == 1:
            await ws.send(text("status", status={"exec_info": {"queue_remaining": 1}}, sid="c1"))
            await ws.send(text("execution_start", prompt_id="p1", timestamp=1))
            return  # closes the connection
        await ws.send(text("execution_success", prompt_id="p1", timestamp=2))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        events = ComfyEvents(f"http://127.0.0.1:{port}", "c1", reconnect_initial_s=0.01)
        items = await take(events, 6)
        await events.aclose()

    assert paths == ["/ws?clientId=c1", "/ws?clientId=c1"]
    assert [type(item).__name__ for item in items] == [
        "Connected",
        "ComfyMessage",
        "ComfyMessage",
        "Disconnected",
        "Connected",
        "ComfyMessage",
    ]
    texts = [(i.type, i.prompt_id) for i in items if isinstance(i, ComfyMessage)]
    assert texts == [("status", None), ("execution_start", "p1"), ("execution_success", "p1")]


async def test_reconnect_cuts_the_backoff_short() -> None:
    """An instance known to be back (its supervisor saw it ready) is connected to at once, not
    after the socket's next backoff, which may be seconds away after a long restart."""
    sock = FakeSocket(text("status", status={"exec_info": {"queue_remaining": 0}}, sid="c1"))
    connect = FakeConnect(ConnectionRefusedError("restarting"), sock)

    async def forever(_: float) -> None:
        await asyncio.Event().wait()

    events = ComfyEvents(BASE, "c1", connect=connect, sleep=forever, reconnect_initial_s=60)
    assert isinstance(await events.__anext__(), Disconnected)
    pending = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.05)
    assert not pending.done()  # waiting out a backoff that would never end
    events.reconnect()
    assert await asyncio.wait_for(pending, 5) == Connected()
    await events.aclose()
    assert len(connect.urls) == 2


async def test_reconnect_replaces_an_open_socket_with_a_fresh_one() -> None:
    """A fast restart may be serving before the old socket's close is seen: the open socket is
    dropped (a Disconnected), and the next Connected is a new connection."""
    old = FakeSocket()  # stays silent, as a socket to a process that just died may
    new = FakeSocket(text("status", status={"exec_info": {"queue_remaining": 0}}, sid="c1"))
    connect = FakeConnect(old, new)
    events = ComfyEvents(BASE, "c1", connect=connect, reconnect_initial_s=0.01)
    assert await events.__anext__() == Connected()
    pending = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.05)
    events.reconnect()
    assert isinstance(await asyncio.wait_for(pending, 5), Disconnected)
    assert await asyncio.wait_for(events.__anext__(), 5) == Connected()
    await events.aclose()
    assert old.closed.is_set() and len(connect.urls) == 2
