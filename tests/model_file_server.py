"""A real HTTP file server for the download tests, with the failure modes model hosts show.

It serves the files of one folder on 127.0.0.1 (a free port) from a thread, speaks HTTP/1.1 with
keep-alive, and can be told to:

- answer `Range` requests or ignore them (`ranges=False`: always 200 with the whole file),
- drop the connection when a body reaches a fraction of the file (`drop_at=0.5`, `drops` times),
- answer 500 (or `fail_status`) `fail_times` times before working,
- serve a wrong body of the right length (`wrong_body=True`),
- send slowly (`throttle_bps`), so that a client can be killed mid-file,
- require a bearer token (`token=`: none -> 401, another -> 403),
- change the file's validator (`etag_suffix`), as a re-uploaded file does,
- redirect some paths elsewhere (`redirects`), as hubs do to their CDNs,
- speak TLS (`tls=` a server context).

Every request is logged with the byte range served and the bytes actually sent, so that a test
can check that a resumed download fetched nothing twice. Usage::

    with ModelFileServer(folder, ranges=True) as server:
        url = server.url("model.bin")
        ...
        assert server.bytes_sent("model.bin") <= size + segment
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import unquote

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_PIECE = 64 * 1024


@dataclass
class Behavior:
    """What the server does; tests may change fields while it runs."""

    ranges: bool = True
    drop_at: float | None = None
    drops: int = 1
    fail_times: int = 0
    fail_status: int = 500
    wrong_body: bool = False
    throttle_bps: float | None = None
    token: str | None = None
    etag_suffix: str = ""
    send_validators: bool = True
    redirects: dict[str, str] = field(default_factory=dict)
    """Request path -> Location: answered with a 302 there instead of a file."""


@dataclass
class Served:
    """One request as the server saw it."""

    method: str
    path: str
    range_header: str | None
    status: int
    start: int = 0
    end: int = 0
    """The body's byte range [start, end) as announced (end exclusive)."""
    sent: int = 0
    """Body bytes actually written to the socket."""
    client_port: int = 0


@dataclass
class _State:
    root: Path
    behavior: Behavior
    log: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # --- the request -----------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        state = self.server.state
        behavior = state.behavior
        record = Served(self.command, self.path, self.headers.get("Range"), 0)
        record.client_port = int(self.client_address[1])
        with state.lock:
            state.log.append(record)
            failing = body and behavior.fail_times > 0
            if failing:
                behavior.fail_times -= 1
        if not self._authorized(record, behavior):
            return
        if failing:
            self._plain(record, behavior.fail_status, b"server error, try again\n")
            return
        location = behavior.redirects.get(self.path.split("?", 1)[0])
        if location is not None:
            self._plain(record, 302, b"moved\n", {"Location": location})
            return
        file = self._file()
        if file is None:
            self._plain(record, 404, b"not found\n")
            return
        size = file.stat().st_size
        etag = self._etag(file, behavior)
        start, end, status = self._range(size, etag, behavior)
        if status == 416:
            self._plain(record, 416, b"range not satisfiable\n", {"Content-Range": f"*/{size}"})
            return
        record.status, record.start, record.end = status, start, end
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/octet-stream")
        if behavior.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if behavior.send_validators:
            self.send_header("ETag", etag)
            modified = email.utils.formatdate(file.stat().st_mtime, usegmt=True)
            self.send_header("Last-Modified", modified)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if body:
            with file.open("rb") as handle:
                self._body(handle, record, size, behavior)

    def _authorized(self, record: Served, behavior: Behavior) -> bool:
        if behavior.token is None:
            return True
        given = self.headers.get("Authorization")
        if given is None:
            self._plain(record, 401, b"token required\n")
            return False
        if given != f"Bearer {behavior.token}":
            self._plain(record, 403, b"token refused\n")
            return False
        return True

    def _file(self) -> Path | None:
        relative = unquote(self.path.split("?", 1)[0]).lstrip("/")
        if not relative or ".." in Path(relative).parts:
            return None
        path = self.server.state.root / relative
        return path if path.is_file() else None

    @staticmethod
    def _etag(file: Path, behavior: Behavior) -> str:
        stat = file.stat()
        tag = hashlib.sha1(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return f'"{tag}{behavior.etag_suffix}"'

    def _range(self, size: int, etag: str, behavior: Behavior) -> tuple[int, int, int]:
        header = self.headers.get("Range")
        if not behavior.ranges or header is None:
            return 0, size, 200
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range.startswith('"') and if_range != etag:
            return 0, size, 200  # the file changed: the whole new file
        match = _RANGE.match(header.strip())
        if match is None:
            return 0, size, 200
        first, last = match.groups()
        if first == "":
            start, end = max(0, size - int(last or 0)), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
        if start >= size or start >= end:
            return 0, 0, 416
        return start, end, 206

    def _plain(
        self, record: Served, status: int, text: bytes, headers: dict[str, str] | None = None
    ) -> None:
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)

    # --- the body --------------------------------------------------------------------------
    def _body(self, handle: BinaryIO, record: Served, size: int, behavior: Behavior) -> None:
        start, end = record.start, record.end
        limit = end
        dropping = False
        if behavior.drop_at is not None and behavior.drops > 0:
            cut = int(size * behavior.drop_at)  # a file offset: "drops at 50% of the file"
            if start <= cut < end:
                with self.server.state.lock:
                    behavior.drops -= 1
                limit, dropping = cut, True
        plain = not (behavior.wrong_body or behavior.throttle_bps or dropping)
        try:
            if plain:
                record.sent = self.connection.sendfile(handle, start, end - start)
            else:
                self._pieces(handle, record, start, limit, behavior)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if dropping:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _pieces(
        self, handle: BinaryIO, record: Served, start: int, limit: int, behavior: Behavior
    ) -> None:
        handle.seek(start)
        began = time.monotonic()
        position = start
        while position < limit and not self.server.state.closing.is_set():
            piece = handle.read(min(_PIECE, limit - position))
            if not piece:
                break
            if behavior.wrong_body:
                piece = bytes(b ^ 0x5A for b in piece)
            self.wfile.write(piece)
            record.sent += len(piece)
            position += len(piece)
            if behavior.throttle_bps:
                ahead = record.sent / behavior.throttle_bps - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: _State, tls: ssl.SSLContext | None = None) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that went away mid-body is what several tests do on purpose


class ModelFileServer:
    """The server in a thread; a context manager. `behavior` may be changed while it runs."""

    def __init__(self, root: Path, *, tls: ssl.SSLContext | None = None, **behavior: Any) -> None:
        self.root = root
        self.tls = tls
        self.behavior = Behavior(**behavior)
        self._state = _State(root=root, behavior=self.behavior)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    @property
    def log(self) -> list[Served]:
        with self._state.lock:
            return list(self._state.log)

    def requests(self, name: str, method: str = "GET") -> list[Served]:
        return [r for r in self.log if r.path.split("?")[0] == f"/{name}" and r.method == method]

    def bytes_sent(self, name: str) -> int:
        """Body bytes sent for `name` over every request so far."""
        return sum(r.sent for r in self.requests(name))

    def start(self) -> ModelFileServer:
        self._server = _Server(self._state, self.tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> ModelFileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """A file of `size` pseudo-random bytes (fast, reproducible); returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)  # 1 MiB pattern
    counter = 0
    with path.open("wb") as handle:
        left = size
        while left > 0:
            stamp = counter.to_bytes(8, "little") * 4
            piece = (stamp + block)[: min(left, len(block) + len(stamp))]
            handle.write(piece)
            digest.update(piece)
            left -= len(piece)
            counter += 1
    os.utime(path, None)
    return digest.hexdigest()


def main() -> None:
    """`python tests/model_file_server.py FOLDER`: serve a folder until killed (benchmarks).

    Prints the base URL on the first line of stdout."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    with ModelFileServer(args.folder) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
