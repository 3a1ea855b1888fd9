"""A lean HTTP/1.1 client for talking to ComfyUI over plain http.

Why not httpx for this: a fleet talks to its own instances many times per job (the submit, the
probes), and httpx's layers (URL objects, cookies, auth and redirect handling, the connection
pool's bookkeeping) cost about 1-2 ms of CPU per request. On a machine whose cores also run
the instances, that CPU is taken from the graphs. This speaks just what ComfyUI's server needs:
a request with a `Content-Length` body, and an answer framed by `Content-Length`, chunks or the
end of the connection, over a few kept-alive connections.

An idle connection the server closed is noticed before reuse (its reader saw the end). Should
one still break before any byte of the answer arrived, an idempotent request (GET) is sent
again once on a fresh connection; anything else fails (`WireError`), as a request that may or
may not have been taken must not be sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

_IDLE_S = 30.0
"""Idle connections older than this are not reused (aiohttp servers close them after 75 s)."""


_JOIN_BELOW = 1 << 16
"""Bodies smaller than this are sent in one buffer with the head."""


class WireError(Exception):
    """The connection failed or the answer was not HTTP: the server is not answering."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole."""

    status_code: int
    content: bytes
    method: str
    path: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        fresh = time.monotonic() - self.idle_since < _IDLE_S
        return fresh and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class _Broken(Exception):
    """The connection broke; `answered` tells whether any byte of the answer had come."""

    def __init__(self, reason: str, answered: bool) -> None:
        super().__init__(reason)
        self.answered = answered


class Http11:
    """Kept-alive HTTP/1.1 connections to one host; every request is bounded by `timeout`."""

    def __init__(
        self, host: str, port: int, *, timeout: float, authority: str = "", keep: int = 4
    ) -> None:
        """`authority`: the Host header (the URL's host and port; an IPv6 host in brackets)."""
        self.host, self.port, self.timeout, self.keep = host, port, timeout, keep
        self._idle: list[_Conn] = []
        self._host_header = (authority or f"{host}:{port}").encode()
        self.closed = False

    async def request(
        self, method: str, target: str, body: bytes | None = None, content_type: str = ""
    ) -> Answer:
        """Send one request (`target`: the path with its query) and read the whole answer."""
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (
            method.encode(),
            target.encode(),
            self._host_header,
        )
        if body is not None:
            head += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (
                content_type.encode(),
                len(body),
            )
        # One buffer for a small request (one send); a large body is not copied into it.
        body = body or b""
        data = [head + b"\r\n" + body] if len(body) < _JOIN_BELOW else [head + b"\r\n", body]
        path = target.split("?", 1)[0]
        try:
            async with asyncio.timeout(self.timeout):
                for tries_left in (1, 0):
                    conn, reused = await self._conn()
                    try:
                        status, content, reusable = await _exchange(conn, data, method)
                    except _Broken as exc:
                        conn.close()
                        if reused and not exc.answered and method == "GET" and tries_left:
                            continue
                        raise WireError(str(exc)) from None
                    except BaseException:
                        conn.close()
                        raise
                    self._put_back(conn, reusable)
                    return Answer(status, content, method, path)
        except TimeoutError:
            raise WireError(f"no answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise WireError(str(exc) or type(exc).__name__) from None
        raise AssertionError("unreachable")

    async def _conn(self) -> tuple[_Conn, bool]:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn, True
            conn.close()
        if self.closed:
            raise WireError("the client is closed")
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Conn(reader, writer), False

    def _put_back(self, conn: _Conn, reusable: bool) -> None:
        if reusable and not self.closed and len(self._idle) < self.keep:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()


async def _exchange(conn: _Conn, data: list[bytes], method: str) -> tuple[int, bytes, bool]:
    """Write the request, read the answer: (status, body, whether the connection may be kept)."""
    reader = conn.reader
    try:
        conn.writer.writelines(data)
        await conn.writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise _Broken("the connection closed before an answer", bool(exc.partial)) from None
    except (ConnectionError, asyncio.LimitOverrunError) as exc:
        raise _Broken(str(exc) or type(exc).__name__, False) from None
    try:
        status, length, chunked, keep = _head(head)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, b"", keep
        if chunked:
            return status, await _chunks(reader), keep
        if length is not None:
            return status, await reader.readexactly(length), keep
        return status, await reader.read(), False
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise _Broken(f"the answer broke off: {type(exc).__name__}", True) from None


def _head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """Status, Content-Length, chunked, keep-alive, from an answer's head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise _Broken(f"not an HTTP answer: {lines[0][:80]!r}", True)
    length, chunked, keep = None, False, parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length" and value.isdigit():
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            keep = "close" not in value.lower() and (keep or "keep-alive" in value.lower())
    return int(parts[1]), length, chunked, keep


async def _chunks(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _Broken(f"bad chunk size {size_line[:40]!r}", True) from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
