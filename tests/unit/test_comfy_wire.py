"""The lean HTTP/1.1 client (`comfy._wire`) and ComfyClient over it, against a real loopback
server that answers what each test scripts: framing, kept-alive connections, connections the
server closes, and when a request may be sent again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from comfyfleet.comfy import ComfyClient, ComfyUnavailable
from comfyfleet.comfy._wire import Http11, WireError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Seen:
    """One request as the server read it."""

    conn: int
    nth: int
    """Its place on its connection (0: the first)."""
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Script = Callable[[Seen], bytes | None]
"""The raw answer to a request; None: close the connection without answering; b"": say
nothing until the client lets go."""


@dataclass
class Server:
    port: int
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    close_after_answer: bool = False
    """Close each connection once its answer is written (a server letting idle ones go)."""


def answer(status: int, body: bytes, *, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[Server]:
    state = Server(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = state.connections
        state.connections += 1
        nth = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(conn, nth, method, target, headers, body)
                state.seen.append(seen)
                nth += 1
                reply = script(seen)
                if reply is None:
                    return
                if not reply:
                    await reader.read()
                    return
                writer.write(reply)
                await writer.drain()
                if state.close_after_answer or b"Connection: close" in reply:
                    return
                if b"Content-Length" not in reply and b"chunked" not in reply:
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()


async def test_keeps_one_connection_for_requests_in_turn() -> None:
    async with serving(lambda seen: answer(200, b'{"n": %d}' % seen.nth)) as server:
        wire = Http11("127.0.0.1", server.port, timeout=5)
        first = await wire.request("GET", "/a?x=1")
        second = await wire.request("POST", "/b", b'{"k": 1}', "application/json")
        await wire.aclose()
    assert (first.status_code, json.loads(first.content)) == (200, {"n": 0})
    assert (second.status_code, json.loads(second.content)) == (200, {"n": 1})
    assert (first.method, first.path, second.path) == ("GET", "/a", "/b")
    assert server.connections == 1
    post = server.seen[1]
    assert (post.method, post.target, post.body) == ("POST", "/b", b'{"k": 1}')
    assert post.headers["content-type"] == "application/json"
    assert post.headers["host"] == f"127.0.0.1:{server.port}"


async def test_a_large_body_arrives_whole() -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: sent apart from the head
    async with serving(lambda seen: answer(200, b"%d" % len(seen.body))) as server:
        wire = Http11("127.0.0.1", server.port, timeout=5)
        sent = await wire.request("POST", "/prompt", body, "application/json")
        await wire.aclose()
    assert sent.content == b"262144"
    assert server.seen[0].body == body


async def test_reads_a_chunked_answer_and_keeps_the_connection() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    async with serving(lambda seen: chunked) as server:
        wire = Http11("127.0.0.1", server.port, timeout=5)
        assert (await wire.request("GET", "/")).content == b"hello, world"
        assert (await wire.request("GET", "/")).content == b"hello, world"
        await wire.aclose()
    assert server.connections == 1


async def test_an_answer_ended_by_closing_is_read_to_the_end_and_not_reused() -> None:
    async with serving(lambda seen: b"HTTP/1.0 404 Not Found\r\n\r\nno such thing") as server:
        wire = Http11("127.0.0.1", server.port, timeout=5)
        first = await wire.request("GET", "/missing")
        second = await wire.request("GET", "/missing")
        await wire.aclose()
    assert (first.status_code, first.text, second.text) == (404, "no such thing", "no such thing")
    assert server.connections == 2


async def test_connection_close_is_honoured() -> None:
    async with serving(lambda seen: answer(200, b"{}", extra="Connection: close\r\n")) as server:
        wire = Http11("127.0.0.1", server.port, timeout=5)
        await wire.request("GET", "/")
        await wire.request("GET", "/")
        await wire.aclose()
    assert server.connections == 2


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async with serving(lambda seen: answer(200, b"{}")) as server:
        server.close_after_answer = True
        wire = Http11("127.0.0.1", server.port, timeout=5)
        await wire.request("GET", "/")
        await asyncio.sleep(0.05)  # the client's reader sees the end while the connection idles
        posted = await wire.request("POST", "/prompt", b"{}", "application/json")
        await wire.aclose()
    assert posted.status_code == 200
    assert [(s.method, s.conn) for s in server.seen] == [("GET", 0), ("POST", 1)]


async def test_a_get_is_sent_again_when_a_kept_connection_breaks_before_answering() -> None:
    def script(seen: Seen) -> bytes | None:
        return None if (seen.conn, seen.nth) == (0, 1) else answer(200, b'{"ok": 1}')

    async with serving(script) as server:
        wire = Http11("127.0.0.1", server.port, timeout=5)
        await wire.request("GET", "/system_stats")
        again = await wire.request("GET", "/system_stats")
        await wire.aclose()
    assert json.loads(again.content) == {"ok": 1}
    assert [(s.conn, s.nth) for s in server.seen] == [(0, 0), (0, 1), (1, 0)]


async def test_a_post_is_never_sent_twice() -> None:
    def script(seen: Seen) -> bytes | None:
        return None if (seen.conn, seen.nth) == (0, 1) else answer(200, b"{}")

    async with serving(script) as server:
        wire = Http11("127.0.0.1", server.port, timeout=5)
        await wire.request("GET", "/")
        with pytest.raises(WireError, match="closed before an answer"):
            await wire.request("POST", "/prompt", b'{"prompt": {}}', "application/json")
        await wire.aclose()
    assert [s.method for s in server.seen] == ["GET", "POST"]


async def test_an_answer_that_breaks_off_is_an_error() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"
    async with serving(lambda seen: cut) as server:
        server.close_after_answer = True
        wire = Http11("127.0.0.1", server.port, timeout=5)
        with pytest.raises(WireError, match="broke off"):
            await wire.request("GET", "/")
        await wire.aclose()


async def test_not_http_is_an_error() -> None:
    async with serving(lambda seen: b"SSH-2.0-OpenSSH\r\n\r\n") as server:
        wire = Http11("127.0.0.1", server.port, timeout=5)
        with pytest.raises(WireError, match="not an HTTP answer"):
            await wire.request("GET", "/")
        await wire.aclose()


async def test_a_server_that_does_not_answer_times_out() -> None:
    async with serving(lambda seen: b"") as server:  # reads the request, answers nothing
        wire = Http11("127.0.0.1", server.port, timeout=0.2)
        with pytest.raises(WireError, match=r"no answer within 0\.2s"):
            await wire.request("GET", "/")
        await wire.aclose()


async def test_comfy_client_submits_over_the_wire_with_the_base_path() -> None:
    def script(seen: Seen) -> bytes | None:
        if seen.method == "POST":
            sent = json.loads(seen.body)
            return answer(200, json.dumps({"prompt_id": sent["prompt_id"]}).encode())
        return answer(200, b'{"exec_info": {"queue_remaining": 3}}')

    async with serving(script) as server:
        async with ComfyClient(f"http://127.0.0.1:{server.port}/comfy", timeout=5) as comfy:
            graph = {"1": {"class_type": "X", "inputs": {}}}
            assert await comfy.submit(graph, client_id="c", prompt_id="p1") == "p1"
            assert await comfy.queue_remaining() == 3
    assert [s.target for s in server.seen] == ["/comfy/prompt", "/comfy/prompt"]
    assert json.loads(server.seen[0].body) == {"prompt": graph, "client_id": "c", "prompt_id": "p1"}
    assert server.connections == 1


async def test_comfy_client_over_the_wire_reports_a_refused_port_as_unavailable() -> None:
    async with serving(lambda seen: None) as server:
        port = server.port
    async with ComfyClient(f"http://127.0.0.1:{port}", timeout=5) as comfy:
        with pytest.raises(ComfyUnavailable, match="is not answering"):
            await comfy.system_stats()
