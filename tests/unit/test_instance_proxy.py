"""The instances proxy: what headers cross, how instances are found, streaming and its bounds,
the home fallback's reserved paths, and WebSocket frames both ways."""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from comfyfleet.facades.instances import InstanceDirectory, InstanceProxy, home_proxy
from comfyfleet.facades.instances import instances_router as make_router
from comfyfleet.facades.instances._errors import ProxyError
from comfyfleet.facades.instances._headers import (
    request_headers,
    response_headers,
    rewrite_location,
)
from comfyfleet.facades.instances._http import forward_http
from comfyfleet.facades.instances._websocket import bridge_websocket
from comfyfleet.jobs import AgentRecord, Fleet, InstanceRecord

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketDenialResponse

BASE = "http://127.0.0.1:8188"


def instance(index: int, *, agent: str = "a", state: str = "ready", url: str = BASE) -> Any:
    return InstanceRecord(agent=agent, index=index, base_url=url, state=state)


def fleet_of(*instances: InstanceRecord, alive: tuple[str, ...] = ("a", "b")) -> Fleet:
    agents = tuple(AgentRecord(id=a, host="h", version="0", started_at=0) for a in alive)
    return Fleet(agents=agents, instances=instances, alive=frozenset(alive))


class FleetSource:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.reads = 0

    async def __call__(self) -> Fleet:
        self.reads += 1
        return self.fleet


# --- headers ------------------------------------------------------------------------------------


def scope_of(*headers: tuple[str, str], kind: str = "http", scheme: str = "http") -> Any:
    return {
        "type": kind,
        "scheme": scheme,
        "client": ("203.0.113.9", 5000),
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }


def test_credentials_hop_by_hop_and_forged_forwarding_headers_do_not_cross() -> None:
    scope = scope_of(
        ("Host", "gw.example"),
        ("Authorization", "Bearer cf_secret"),
        ("Cookie", "comfyfleet_session=abc; Comfy.Settings=1"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic x"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("Origin", "http://gw.example"),
        ("Accept-Encoding", "gzip"),
        ("Content-Type", "application/json"),
    )
    sent = dict(request_headers(scope, base_url=BASE, prefix="/instances/0"))
    assert sent == {
        b"cookie": b"Comfy.Settings=1",
        b"accept-encoding": b"gzip",
        b"content-type": b"application/json",
        b"origin": b"http://127.0.0.1:8188",
        b"x-forwarded-for": b"203.0.113.9",
        b"x-forwarded-proto": b"http",
        b"x-forwarded-host": b"gw.example",
        b"x-forwarded-prefix": b"/instances/0",
    }


def test_a_websockets_handshake_headers_are_its_own() -> None:
    scope = scope_of(
        ("Sec-WebSocket-Key", "k"),
        ("Sec-WebSocket-Protocol", "x"),
        ("Upgrade", "websocket"),
        ("User-Agent", "browser"),
        kind="websocket",
        scheme="wss",
    )
    sent = dict(request_headers(scope, base_url=BASE, prefix=""))
    assert sent == {
        b"user-agent": b"browser",
        b"x-forwarded-for": b"203.0.113.9",
        b"x-forwarded-proto": b"https",
    }


def test_answers_lose_hop_by_hop_headers_and_cannot_set_the_session_cookie() -> None:
    got = response_headers(
        [
            (b"Content-Type", b"text/html"),
            (b"Connection", b"close"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Set-Cookie", b"comfyfleet_session=evil; Path=/"),
            (b"Set-Cookie", b"theme=dark"),
            (b"Location", b"/api/view"),
        ],
        base_url=BASE,
        prefix="/instances/1",
    )
    assert got == [
        (b"content-type", b"text/html"),
        (b"set-cookie", b"theme=dark"),
        (b"location", b"/instances/1/api/view"),
    ]


@pytest.mark.parametrize(
    ("location", "prefix", "expected"),
    [
        ("/x", "/instances/0", "/instances/0/x"),
        ("http://127.0.0.1:8188/x?y", "/instances/0", "/instances/0/x?y"),
        ("http://127.0.0.1:8188", "/instances/0", "/instances/0/"),
        ("http://127.0.0.1:81889/x", "/instances/0", "http://127.0.0.1:81889/x"),
        ("x/y", "/instances/0", "x/y"),
        ("https://elsewhere/x", "/instances/0", "https://elsewhere/x"),
        ("//elsewhere/x", "/instances/0", "//elsewhere/x"),
        ("/x", "", "/x"),
    ],
)
def test_redirects_into_the_instance_stay_under_the_prefix(
    location: str, prefix: str, expected: str
) -> None:
    assert rewrite_location(location, BASE, prefix) == expected


# --- finding instances ----------------------------------------------------------------------


def directory(*instances: InstanceRecord, alive: tuple[str, ...] = ("a", "b")) -> Any:
    return InstanceDirectory(FleetSource(fleet_of(*instances, alive=alive)))


async def refused(awaitable: Any) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        await awaitable
    return caught.value


def test_instances_are_found_by_index_or_agent_and_index() -> None:
    async def go() -> None:
        found = directory(instance(0), instance(1), instance(0, agent="b"))
        assert (await found.instance("1")).index == 1
        assert (await found.instance("b:0")).agent == "b"
        ambiguous = await refused(found.instance("0"))
        assert (ambiguous.status, ambiguous.code) == (409, "instance_ambiguous")
        assert ambiguous.details["candidates"] == ["a:0", "b:0"]
        for ref in ("7", "c:0", "../x", "-1"):
            missing = await refused(found.instance(ref))
            assert (missing.status, missing.code) == (404, "instance_not_found")

    asyncio.run(go())


def test_an_instance_that_does_not_serve_is_503_with_its_state() -> None:
    async def go() -> None:
        found = directory(instance(0, state="starting"), instance(1, agent="gone"), alive=("a",))
        starting = await refused(found.instance("0"))
        assert (starting.status, starting.details["state"]) == (503, "starting")
        gone = await refused(found.instance("1"))
        assert (gone.code, gone.details["state"]) == ("instance_not_serving", "gone")

    asyncio.run(go())


def test_the_home_instance_stays_while_it_serves_and_moves_when_it_stops() -> None:
    async def go() -> None:
        source = FleetSource(fleet_of(instance(0, state="crashed"), instance(1), instance(2)))
        found = InstanceDirectory(source, ttl_s=0)
        assert (await found.home()).index == 1
        source.fleet = fleet_of(instance(0), instance(1), instance(2))
        assert (await found.home()).index == 1  # sticky, though 0 serves again
        source.fleet = fleet_of(instance(0), instance(1, state="crashed"), instance(2))
        assert (await found.home()).index == 0
        source.fleet = fleet_of(instance(0, state="stopped"))
        none = await refused(found.home())
        assert (none.status, none.code) == (503, "no_instance_serving")

    asyncio.run(go())


def test_the_fleet_is_read_at_most_once_a_second_unless_forgotten() -> None:
    async def go() -> None:
        now = [0.0]
        source = FleetSource(fleet_of(instance(0)))
        found = InstanceDirectory(source, ttl_s=1.0, clock=lambda: now[0])
        await asyncio.gather(*(found.instance("0") for _ in range(50)))
        assert source.reads == 1
        now[0] = 1.5
        await found.instance("0")
        found.forget()
        await found.instance("0")
        assert source.reads == 3

    asyncio.run(go())


# --- HTTP through the gateway ---------------------------------------------------------------


async def upstream_echo(scope: Any, receive: Any, send: Any) -> None:
    """An instance that answers with what it got (and a redirect for `/go`)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/go":
        await send(
            {"type": "http.response.start", "status": 302, "headers": [(b"location", b"/x")]}
        )
        await send({"type": "http.response.body", "body": b""})
        return
    got = {
        "method": scope["method"],
        "path": scope["raw_path"].split(b"?")[0].decode(),
        "query": scope["query_string"].decode(),
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "body": body.decode(),
    }
    answer = json.dumps(got).encode()
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def gateway(fleet: Fleet, client: httpx.AsyncClient | None = None) -> FastAPI:
    upstream = client or httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream_echo))
    proxy = InstanceProxy(FleetSource(fleet), client=upstream, ui_scope="admin")
    app = FastAPI()

    @app.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    app.include_router(make_router(proxy))
    app.router.default = home_proxy(proxy)
    return app


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_any_method_and_body_reach_the_instance_under_its_prefix() -> None:
    app = gateway(fleet_of(instance(0), instance(1)))
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        body = b"" if method == "GET" else b'{"a": 1}'
        answer = call(app, method, "/instances/1/api/x%2Fy?q=1&r=%20", content=body)
        assert answer.status_code == 200
        got = answer.json()
        assert (got["method"], got["path"], got["query"]) == (method, "/api/x%2Fy", "q=1&r=%20")
        assert got["body"] == body.decode()
        assert got["headers"]["x-forwarded-prefix"] == "/instances/1"
        assert "connection" not in answer.headers
    root = call(app, "GET", "/instances/0/").json()
    assert root["path"] == "/"
    bare = call(app, "GET", "/instances/0?x=1")
    assert (bare.status_code, bare.headers["location"]) == (308, "/instances/0/?x=1")
    moved = call(app, "GET", "/instances/0/go")
    assert (moved.status_code, moved.headers["location"]) == (302, "/instances/0/x")


def test_what_no_route_takes_goes_home_but_the_gateways_prefixes_do_not() -> None:
    app = gateway(fleet_of(instance(0)))
    settings = call(app, "GET", "/api/settings?x=1")
    assert (settings.json()["path"], settings.json()["query"]) == ("/api/settings", "x=1")
    assert call(app, "POST", "/api/userdata/w.json", content=b"{}").json()["body"] == "{}"
    assert call(app, "GET", "/").json()["path"] == "/"
    assert call(app, "GET", "/v1/ping").json() == {"pong": "yes"}
    for path in (
        "/v1/nope",
        "/v1",
        "/api/v2/x",
        "/openai/v1/models",
        "/metrics",
        "/instances",
        "/dashboard/x",
        "/docs/x",
        "/login",
        "/health/x",
    ):
        answer = call(app, "GET", path)
        assert answer.status_code == 404, path
        assert answer.json() == {
            "error": {"code": "not_found", "message": "Not Found", "details": None}
        }
    assert call(app, "GET", "/v1x").status_code == 200  # a prefix is a whole segment


def test_unknown_stopped_and_unreachable_instances_are_clear_errors() -> None:
    app = gateway(fleet_of(instance(0), instance(1, state="crashed")))
    unknown = call(app, "GET", "/instances/5/")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "instance_not_found")
    crashed = call(app, "GET", "/instances/1/")
    assert (crashed.status_code, crashed.json()["error"]["code"]) == (503, "instance_not_serving")
    assert set(crashed.json()["error"]) == {"code", "message", "details"}
    nowhere = gateway(
        fleet_of(instance(0, url="http://127.0.0.1:1")),
        client=httpx.AsyncClient(trust_env=False),
    )
    dead = call(nowhere, "GET", "/instances/0/")
    assert (dead.status_code, dead.json()["error"]["code"]) == (502, "instance_unreachable")
    home = call(gateway(fleet_of()), "GET", "/api/settings")
    assert (home.status_code, home.json()["error"]["code"]) == (503, "no_instance_serving")


def test_a_page_of_another_site_cannot_reach_an_instance() -> None:
    app = gateway(fleet_of(instance(0)))
    evil = call(app, "POST", "/instances/0/api/prompt", headers={"Origin": "http://evil"})
    assert (evil.status_code, evil.json()["error"]["code"]) == (403, "cross_origin")
    same = call(app, "POST", "/instances/0/api/prompt", headers={"Origin": "http://gw"})
    assert same.json()["headers"]["origin"] == BASE  # what ComfyUI's own check accepts


# --- streaming and its bounds ---------------------------------------------------------------


def test_a_client_that_does_not_read_holds_one_chunk_not_the_whole_answer() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"x" * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    async def go() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        stalled = asyncio.Event()
        left = asyncio.Event()
        sent: list[Any] = []

        async def receive() -> Any:
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) >= 3:
                stalled.set()
                await asyncio.Event().wait()  # a client whose socket is full: never drains

        scope = {"type": "http", "method": "GET", "headers": [], "query_string": b""}
        relay = asyncio.create_task(
            forward_http(client, scope, receive, send, base_url=BASE, path=b"/", prefix="")
        )
        await stalled.wait()
        await asyncio.sleep(0.2)
        assert produced <= 3  # what was sent, and nothing read ahead
        left.set()  # the client goes away: the relay ends instead of reading on
        await asyncio.wait_for(relay, 5)
        await client.aclose()

    asyncio.run(go())


# --- WebSocket ------------------------------------------------------------------------------


CLOSED_BY_CLIENT: list[int | None] = []


@pytest.fixture
def ws_upstream() -> Iterator[str]:
    """A WebSocket server like an instance's: greets, echoes, closes with 4001 on `bye`, and
    notes the code a client closed with."""
    CLOSED_BY_CLIENT.clear()

    def handler(connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        connection.send(json.dumps({"type": "status", "path": request.path}))
        try:
            for message in connection:
                if message == "bye":
                    connection.close(4001, "asked to")
                    return
                connection.send(message)
        except ConnectionClosed:
            pass
        CLOSED_BY_CLIENT.append(connection.close_code)

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        yield f"http://{host}:{port}"
        server.shutdown()


def test_websocket_frames_cross_both_ways_text_and_binary(ws_upstream: str) -> None:
    app = gateway(fleet_of(instance(0, url=ws_upstream)))
    with TestClient(app).websocket_connect("/instances/0/ws?clientId=x") as ws:
        assert ws.receive_json() == {"type": "status", "path": "/ws?clientId=x"}
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        ws.send_bytes(b"\x00\x01binary")
        assert ws.receive_bytes() == b"\x00\x01binary"
        ws.send_text("bye")
        closed = ws.receive()
        assert (closed["type"], closed["code"], closed["reason"]) == (
            "websocket.close",
            4001,
            "asked to",
        )


def test_the_home_instance_takes_websockets_too(ws_upstream: str) -> None:
    app = gateway(fleet_of(instance(0, url=ws_upstream)))
    with TestClient(app).websocket_connect("/ws?clientId=home") as ws:
        assert ws.receive_json()["path"] == "/ws?clientId=home"
        ws.send_text("bye")
        assert ws.receive()["code"] == 4001


def test_a_client_that_closes_closes_the_instances_side_alike(ws_upstream: str) -> None:
    async def go() -> None:
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        scope = {"type": "websocket", "headers": [], "query_string": b"", "subprotocols": []}
        await inbox.put({"type": "websocket.connect"})
        bridge = asyncio.create_task(
            bridge_websocket(
                scope, inbox.get, outbox.put, base_url=ws_upstream, path=b"/ws", prefix=""
            )
        )
        assert (await outbox.get())["type"] == "websocket.accept"
        assert json.loads((await outbox.get())["text"])["type"] == "status"
        await inbox.put({"type": "websocket.disconnect", "code": 4002})
        await asyncio.wait_for(bridge, 5)
        for _ in range(50):
            if CLOSED_BY_CLIENT:
                break
            await asyncio.sleep(0.05)
        assert CLOSED_BY_CLIENT == [4002]

    asyncio.run(go())


def test_an_instance_that_cannot_be_reached_refuses_the_handshake() -> None:
    app = gateway(fleet_of(instance(0, url="http://127.0.0.1:1")))
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        TestClient(app).websocket_connect("/instances/0/ws"),
    ):
        pass
    assert denied.value.status_code == 502
    assert denied.value.json()["error"]["code"] == "instance_unreachable"
