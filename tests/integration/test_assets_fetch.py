"""Media inputs against real servers: HTTP(S) servers in threads on 127.0.0.1 for URL fetching
(the SSRF guard, redirects, size limits, TLS to a checked IP), and the `/v1/assets` router served
by uvicorn in a thread for real uploads."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from comfyfleet.assets import (
    ASSETS_FOLDER,
    AssetResolver,
    AssetStore,
    MediaInputError,
    UrlFetcher,
    resolve_media,
)
from comfyfleet.gateway._assets_api import assets_router
from comfyfleet.gateway._errors import ApiError, api_error_handler
from comfyfleet.netguard import NetPolicy
from tests.tls_certs import make_tls

pytestmark = pytest.mark.anyio

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
MiB = 1024 * 1024
Route = Callable[["Handler"], None]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.requests.append((self.path, self.headers.get("Host", "")))
        owner.routes.get(self.path, _not_found)(self)

    def send_body(self, body: bytes, content_type: str = "image/png") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def stream(self, total: int, *, length: int | None, chunked: bool = False) -> None:
        """Send `total` bytes, announcing `length` (or nothing); note how far it got."""
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = 0
        try:
            while sent < total:
                piece = b"\x00" * 65536
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        self.server.owner.sent[self.path] = sent


def _not_found(handler: Handler) -> None:
    handler.send_response(404)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HttpServer

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.owner.lock:
            self.owner.connections += 1
        return True


class Server6(Server):
    address_family = socket.AF_INET6


class HttpServer:
    """A real HTTP(S) server in a thread that counts connections and records requests."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self.sent: dict[str, int] = {}
        self.routes: dict[str, Route] = {}
        self.release = threading.Event()
        self.server = (Server6 if ":" in host else Server)((host, 0), Handler)
        self.server.owner = self
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host, self.port = host, self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, host: str | None = None, scheme: str = "http") -> str:
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{name}:{self.port}{path}"

    def __enter__(self) -> HttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as running:
        running.routes["/cat.png"] = lambda h: h.send_body(PNG)
        yield running


def _server_or_skip(host: str) -> HttpServer:
    try:
        return HttpServer(host)
    except OSError as exc:
        pytest.skip(f"cannot listen on {host} here: {exc}")


def fetcher(**kwargs: Any) -> UrlFetcher:
    kwargs.setdefault("timeout_s", 20.0)
    return UrlFetcher(**kwargs)


LOCAL = NetPolicy.build(networks=["127.0.0.1/32"])


async def refused(fetch: UrlFetcher, url: str) -> MediaInputError:
    with pytest.raises(MediaInputError) as caught:
        await fetch.fetch(url)
    assert caught.value.code == "url_refused", caught.value.message
    return caught.value


async def test_internal_addresses_are_refused_without_a_connection(server: HttpServer) -> None:
    fetch = fetcher()
    error = await refused(fetch, server.url("/cat.png"))
    assert error.message == "127.0.0.1 is a loopback address"
    assert "metadata" in (await refused(fetch, "http://169.254.169.254/latest/meta-data/")).message
    assert (
        "10.0.0.1 is a private address" in (await refused(fetch, "http://10.0.0.1/a.png")).message
    )
    # other spellings of the loopback address end up at the same check
    for url in (server.url("/cat.png", "127.1"), server.url("/cat.png", "2130706433")):
        assert "loopback" in (await refused(fetch, url)).message
    # a name that resolves inside is refused too, and never connected to
    named = fetcher(resolve=_dns({"media.test": "127.0.0.1"}))
    assert (
        "(media.test resolves to it)"
        in (await refused(named, server.url("/", "media.test"))).message
    )
    assert (server.connections, server.requests) == (0, [])


async def test_ipv6_loopback_is_refused_without_a_connection() -> None:
    with _server_or_skip("::1") as six:
        six.routes["/cat.png"] = lambda h: h.send_body(PNG)
        fetch = fetcher()
        assert "::1 is a loopback address" in (await refused(fetch, six.url("/cat.png"))).message
        mapped = f"http://[::ffff:127.0.0.1]:{six.port}/cat.png"
        assert "IPv4-mapped 127.0.0.1" in (await refused(fetch, mapped)).message
        assert (six.connections, six.requests) == (0, [])
        # and it works once the operator allows it
        assert (
            await fetcher(policy=NetPolicy.build(allow_private=True)).fetch(six.url("/cat.png"))
            == PNG
        )


async def test_allow_private_and_allowlists_open_the_way(
    server: HttpServer, tmp_path: Path
) -> None:
    url = server.url("/cat.png")
    assert await fetcher(policy=NetPolicy.build(allow_private=True)).fetch(url) == PNG
    assert await fetcher(policy=LOCAL).fetch(url) == PNG
    store = AssetStore(tmp_path)
    asset, created = await fetcher(policy=LOCAL).fetch_into(store, url)
    assert created and asset.content_type == "image/png" and asset.filename == "cat.png"
    assert store.path(asset.id).read_bytes() == PNG
    assert len(server.requests) == 3


async def test_a_name_is_resolved_once_and_the_checked_address_is_used(server: HttpServer) -> None:
    dns = _dns({"media.test": "127.0.0.1"})
    fetch = fetcher(policy=NetPolicy.build(hosts=["media.test"]), resolve=dns)
    assert await fetch.fetch(server.url("/cat.png", "media.test")) == PNG
    assert dns.asked == ["media.test"]
    assert server.requests == [("/cat.png", f"media.test:{server.port}")]


async def test_redirects_are_followed_up_to_the_limit(server: HttpServer) -> None:
    for hops in range(5):
        target = "/cat.png" if hops == 0 else f"/r/{hops - 1}"
        server.routes[f"/r/{hops}"] = lambda h, t=target: h.redirect(t)
    fetch = fetcher(policy=LOCAL, max_redirects=3)
    assert await fetch.fetch(server.url("/r/2")) == PNG  # r/2 -> r/1 -> r/0 -> cat: 3 hops
    server.requests.clear()
    with pytest.raises(MediaInputError) as caught:
        await fetch.fetch(server.url("/r/4"))
    assert caught.value.code == "url_unreachable"
    assert "redirects more than 3 times" in caught.value.message
    assert [path for path, _ in server.requests] == ["/r/4", "/r/3", "/r/2", "/r/1"]


async def test_a_redirect_to_an_internal_address_is_refused(server: HttpServer) -> None:
    with _server_or_skip("127.0.0.2") as inside:
        inside.routes["/secret"] = lambda h: h.send_body(b"credentials", "text/plain")
        server.routes["/go"] = lambda h: h.redirect(inside.url("/secret"))
        server.routes["/file"] = lambda h: h.redirect("file:///etc/passwd")
        fetch = fetcher(policy=LOCAL)
        error = await refused(fetch, server.url("/go"))
        assert (
            error.message
            == f"redirected to {inside.url('/secret')}: 127.0.0.2 is a loopback address"
        )
        assert (inside.connections, inside.requests) == (0, [])
        assert "file:// URLs are not fetched" in (await refused(fetch, server.url("/file"))).message


async def test_size_limits_hold_whatever_the_server_announces(server: HttpServer) -> None:
    server.routes["/none"] = lambda h: h.stream(8 * MiB, length=None)
    server.routes["/chunked"] = lambda h: h.stream(8 * MiB, length=None, chunked=True)
    server.routes["/lie"] = lambda h: h.stream(8 * MiB, length=1000)
    server.routes["/announced"] = lambda h: h.stream(MiB, length=50 * MiB)
    fetch = fetcher(policy=LOCAL, max_bytes=MiB)
    for path in ("/none", "/chunked"):
        with pytest.raises(MediaInputError) as caught:
            await fetch.fetch(server.url(path))
        assert caught.value.code == "input_too_large", path
        assert "larger than the limit of 1.0 MiB" in caught.value.message
    # a server that announces less than it sends gets read up to what it announced, no further
    assert len(await fetch.fetch(server.url("/lie"))) == 1000
    with pytest.raises(MediaInputError, match=r"52428800 bytes announced") as announced:
        await fetch.fetch(server.url("/announced"))
    assert announced.value.code == "input_too_large"
    deadline = time.monotonic() + 10
    while len(server.sent) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.sent["/none"] < 8 * MiB and server.sent["/chunked"] < 8 * MiB  # cut off


async def test_unusable_answers_have_clear_codes(server: HttpServer, tmp_path: Path) -> None:
    server.routes["/boom"] = lambda h: h.send_error(500)
    server.routes["/stall"] = lambda h: h.server.owner.release.wait(10)
    fetch = fetcher(policy=LOCAL)
    with pytest.raises(MediaInputError) as missing:
        await fetch.fetch(server.url("/gone.png"))
    assert missing.value.code == "url_not_found"
    with pytest.raises(MediaInputError) as boom:
        await fetch.fetch(server.url("/boom"))
    assert boom.value.code == "url_unreachable" and "500" in boom.value.message
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(MediaInputError) as refused_port:
        await fetch.fetch(f"http://127.0.0.1:{port}/x.png")
    assert refused_port.value.code == "url_unreachable"
    with pytest.raises(MediaInputError) as slow:
        await fetcher(policy=LOCAL, timeout_s=0.5).fetch(server.url("/stall"))
    assert slow.value.code == "url_unreachable"
    # in a graph: 422-worthy, naming the node
    resolver = AssetResolver(AssetStore(tmp_path), fetch)
    with pytest.raises(MediaInputError) as in_graph:
        graph = {"7": {"class_type": "LoadImage", "inputs": {"image": server.url("/gone.png")}}}
        await resolve_media(graph, resolver)
    assert in_graph.value.message.startswith("node 7 (LoadImage): input 'image': ")


async def test_a_graph_fetches_each_url_once(server: HttpServer, tmp_path: Path) -> None:
    url = server.url("/cat.png")
    graph = {
        str(n): {"class_type": "LoadImage", "inputs": {"image": url, "upload": "image"}}
        for n in range(1, 4)
    }
    resolver = AssetResolver(AssetStore(tmp_path), fetcher(policy=LOCAL))
    result, rewrites = await resolve_media(graph, resolver)
    names = {node["inputs"]["image"] for node in result.values()}
    assert len(names) == 1 and len(rewrites) == 3
    assert (tmp_path / names.pop()).read_bytes() == PNG
    assert server.requests == [("/cat.png", f"127.0.0.1:{server.port}")]


async def test_tls_is_verified_against_the_name_while_connecting_to_the_ip(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="cryptography makes the test certificates")
    ca_file, server_tls = make_tls(tmp_path, "media.test")
    client_tls = ssl.create_default_context(cafile=str(ca_file))
    with HttpServer(tls=server_tls) as secure:
        secure.routes["/cat.png"] = lambda h: h.send_body(PNG)
        dns = _dns({"media.test": "127.0.0.1", "other.test": "127.0.0.1"})
        policy = NetPolicy.build(hosts=["media.test", "other.test"])
        fetch = fetcher(policy=policy, resolve=dns, verify=client_tls)
        assert await fetch.fetch(secure.url("/cat.png", "media.test", "https")) == PNG
        with pytest.raises(MediaInputError) as wrong_name:
            await fetch.fetch(secure.url("/cat.png", "other.test", "https"))
        assert wrong_name.value.code == "url_unreachable"
        assert "certificate" in wrong_name.value.message.lower()
        assert secure.requests == [("/cat.png", f"media.test:{secure.port}")]


# --- uploads through the router, served by uvicorn ---------------------------------------------


class Gateway:
    def __init__(self, store: AssetStore, limit: int) -> None:
        app = FastAPI()
        app.add_exception_handler(ApiError, api_error_handler)
        app.include_router(assets_router(store, max_upload_bytes=limit))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        self.http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        return self.http

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def _stored(store: AssetStore) -> list[str]:
    return (
        sorted(p.name for p in store.folder.glob("*") if p.is_file())
        if store.folder.exists()
        else []
    )


def test_uploads_multipart_and_raw(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "input")
    with Gateway(store, limit=64 * 1024) as http:
        first = http.post("/v1/assets", files={"file": ("../../cat.jpg", PNG, "image/jpeg")})
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["content_type"] == "image/png"  # sniffed, not declared
        assert body["name"] == f"{ASSETS_FOLDER}/{body['id']}.png"
        assert body["sha256"] == body["id"] and body["size"] == len(PNG)
        assert body["filename"] == "cat.jpg"

        again = http.post("/v1/assets", content=PNG, headers={"Content-Type": "image/png"})
        assert again.status_code == 200 and again.json()["id"] == body["id"]

        wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 100
        raw = http.post(
            "/v1/assets?filename=voice.wav",
            content=iter([wav[:10], wav[10:]]),  # chunked, no Content-Length
            headers={"Content-Type": "audio/wav"},
        )
        assert raw.status_code == 201 and raw.json()["content_type"] == "audio/wav"
        assert raw.json()["filename"] == "voice.wav"

        meta = http.get(f"/v1/assets/{body['id']}")
        assert meta.status_code == 200 and meta.json() == body
        content = http.get(f"/v1/assets/{body['id']}/content")
        assert content.content == PNG and content.headers["content-type"] == "image/png"
        assert (tmp_path / "input" / body["name"]).read_bytes() == PNG  # where ComfyUI reads

        assert http.delete(f"/v1/assets/{body['id']}").status_code == 204
        gone = http.get(f"/v1/assets/{body['id']}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "asset_not_found"
        assert http.get("/v1/assets/..%2F..%2Fetc%2Fpasswd").status_code == 404
        assert _stored(store) == [f"{raw.json()['id']}.wav"]


def test_uploads_over_the_limit_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "input")
    big = PNG + b"\x00" * (100 * 1024)
    with Gateway(store, limit=64 * 1024) as http:
        answers = [
            http.post("/v1/assets", files={"file": ("big.png", big, "image/png")}),
            http.post("/v1/assets", content=big, headers={"Content-Type": "image/png"}),
            http.post(
                "/v1/assets",
                content=iter([big[i : i + 8192] for i in range(0, len(big), 8192)]),
                headers={"Content-Type": "image/png"},
            ),
        ]
        for answer in answers:
            assert answer.status_code == 413, answer.text
            error = answer.json()["error"]
            assert error["code"] == "upload_too_large" and "65536" in error["message"]
        assert _stored(store) == []

        odd = http.post("/v1/assets", content=b"{}", headers={"Content-Type": "application/json"})
        assert odd.status_code == 415 and odd.json()["error"]["code"] == "unsupported_media_type"
        no_file = http.post("/v1/assets", files={"picture": ("a.png", PNG, "image/png")})
        assert no_file.status_code == 422 and "'file'" in no_file.json()["error"]["message"]
        empty = http.post("/v1/assets", content=b"", headers={"Content-Type": "image/png"})
        assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_upload"
        assert _stored(store) == []


async def test_an_uploaded_asset_is_used_by_id_in_a_graph(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "input")
    with Gateway(store, limit=MiB) as http:
        asset_id = http.post("/v1/assets", files={"file": ("c.png", PNG, "image/png")}).json()["id"]
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": f"asset:{asset_id}"}}}
    result, _ = await resolve_media(graph, AssetResolver(store))
    assert result["1"]["inputs"]["image"] == f"{ASSETS_FOLDER}/{asset_id}.png"


# --- helpers ---------------------------------------------------------------------------------


class _Dns:
    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers[host]]


def _dns(answers: dict[str, str]) -> _Dns:
    return _Dns(answers)
