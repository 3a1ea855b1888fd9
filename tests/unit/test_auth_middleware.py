"""The API key middleware in front of a small FastAPI app: who gets in, and what is answered."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

from comfyfleet.auth import (
    ApiKeyMiddleware,
    KeyRecord,
    KeyStore,
    KeyStoreError,
    key_of,
)
from comfyfleet.auth._middleware import ASGIApp, Message

with warnings.catch_warnings():
    # This starlette prefers the `httpx2` package for its test client and warns when it falls
    # back to `httpx`, which works the same for what these tests do.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketDenialResponse

ERROR_KEYS = {"code", "message", "details"}


def make_app(keys: Any, public: tuple[str, ...] = ("/health",)) -> ApiKeyMiddleware:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        scoped = key_of(request.scope)
        return {
            "state": request.state.api_key.id,
            "scope": scoped.id if scoped else None,
            "authorization": request.headers.get("authorization"),
        }

    @app.get("/v1/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"data: {i}\n\n".encode()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.websocket("/v1/ws")
    async def ws(websocket: WebSocket) -> None:
        offered = websocket.scope["subprotocols"]
        await websocket.accept("comfy" if "comfy" in offered else None)
        scoped = key_of(websocket.scope)
        await websocket.send_json(
            {
                "key": scoped.id if scoped else None,
                "subprotocols": offered,
                "protocol_header": websocket.headers.get("sec-websocket-protocol"),
                "authorization": websocket.headers.get("authorization"),
            }
        )
        await websocket.close()

    return ApiKeyMiddleware(app, keys, public_paths=public)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "api_keys.json")


@pytest.fixture
def token(store: KeyStore) -> str:
    return store.create("tests").token


def get(app: ASGIApp, path: str, headers: Any = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def assert_unauthorized(response: httpx.Response, presented: str | None = None) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["code"] == "unauthorized" and body["error"]["details"] is None
    if presented:
        assert presented not in response.text


# --- HTTP ---------------------------------------------------------------------------------------


def test_health_needs_no_key(store: KeyStore) -> None:
    response = get(make_app(store), "/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_no_key_is_401_with_the_error_shape_and_a_bearer_challenge(store: KeyStore) -> None:
    response = get(make_app(store), "/v1/whoami")
    assert_unauthorized(response)
    assert "Authorization: Bearer" in response.json()["error"]["message"]
    assert "invalid_token" not in response.headers["www-authenticate"]


def test_a_valid_key_gets_in_and_the_app_sees_its_record_not_its_text(
    store: KeyStore, token: str
) -> None:
    response = get(make_app(store), "/v1/whoami", {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    key_id = token.split("_")[1]
    assert response.json() == {"state": key_id, "scope": key_id, "authorization": None}


def test_the_scheme_is_case_insensitive(store: KeyStore, token: str) -> None:
    response = get(make_app(store), "/v1/whoami", {"Authorization": f"bearer   {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Bearer cf_zzzzzzzz_" + "A" * 43)],
        [("Authorization", "Bearer ")],
        [("Authorization", "Basic dXNlcjpwYXNz")],
        [("Authorization", "TOKEN"), ("Authorization", "TOKEN")],  # replaced below
    ],
)
def test_bad_keys_are_401_invalid_token(
    store: KeyStore, token: str, headers: list[tuple[str, str]]
) -> None:
    headers = [(k, token if v == "TOKEN" else v) for k, v in headers]
    response = get(make_app(store), "/v1/whoami", headers)
    assert_unauthorized(response, presented=token)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_a_key_in_the_query_string_is_not_accepted(store: KeyStore, token: str) -> None:
    for name in ("api_key", "access_token", "key", "token"):
        response = get(make_app(store), f"/v1/whoami?{name}={token}")
        assert_unauthorized(response, presented=token)


def test_revoked_keys_are_refused_on_the_next_request(store: KeyStore, token: str) -> None:
    app = make_app(store)
    headers = {"Authorization": f"Bearer {token}"}
    assert get(app, "/v1/whoami", headers).status_code == 200
    KeyStore(store.path).revoke(token.split("_")[1])  # e.g. the CLI, another process
    assert_unauthorized(get(app, "/v1/whoami", headers), presented=token)


def test_unknown_paths_do_not_reveal_themselves_without_a_key(store: KeyStore, token: str) -> None:
    app = make_app(store)
    assert_unauthorized(get(app, "/v1/nothing-here"))
    assert get(app, "/v1/nothing-here", {"Authorization": f"Bearer {token}"}).status_code == 404


def test_public_paths_are_exact(store: KeyStore) -> None:
    app = make_app(store, public=("/health", "/v1/whoami"))
    assert get(app, "/health/").status_code == 401
    assert get(app, "/healthz").status_code == 401


def test_streaming_answers_pass_through(store: KeyStore, token: str) -> None:
    response = get(make_app(store), "/v1/stream", {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


class BrokenStore:
    def verify(self, token: str) -> KeyRecord | None:
        raise KeyStoreError("the key file /somewhere/api_keys.json is not JSON")


def test_an_unreadable_key_file_fails_closed_with_503(token: str) -> None:
    response = get(make_app(BrokenStore()), "/v1/whoami", {"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"
    assert token not in response.text and "/somewhere" not in response.text


def test_lifespan_passes_through(store: KeyStore) -> None:
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append(True)
        yield

    app = FastAPI(lifespan=lifespan)
    with TestClient(ApiKeyMiddleware(app, store)):
        pass
    assert started == [True]


# --- WebSocket ----------------------------------------------------------------------------------


@pytest.fixture
def client(store: KeyStore) -> Iterator[TestClient]:
    with TestClient(make_app(store)) as test_client:
        yield test_client


def test_a_websocket_without_a_key_is_refused_before_accept(client: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as caught, client.websocket_connect("/v1/ws"):
        pass
    denial = caught.value
    assert denial.status_code == 401
    assert denial.headers["www-authenticate"].startswith("Bearer")
    assert json.loads(denial.content)["error"]["code"] == "unauthorized"


def test_a_websocket_with_a_bad_protocol_key_is_refused(client: TestClient, token: str) -> None:
    bad = token[:-3] + "xyz"
    with (
        pytest.raises(WebSocketDenialResponse) as caught,
        client.websocket_connect("/v1/ws", subprotocols=["bearer", f"bearer.{bad}"]),
    ):
        pass
    assert caught.value.status_code == 401 and bad.encode() not in caught.value.content


def test_a_websocket_with_the_header_gets_in(client: TestClient, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with client.websocket_connect("/v1/ws", headers=headers) as ws:
        seen = ws.receive_json()
    assert seen["key"] == token.split("_")[1] and seen["authorization"] is None


def test_a_browser_websocket_may_send_the_key_as_a_subprotocol(
    client: TestClient, token: str
) -> None:
    with client.websocket_connect("/v1/ws", subprotocols=["bearer", f"bearer.{token}"]) as ws:
        seen = ws.receive_json()
        assert ws.accepted_subprotocol == "bearer"  # never the entry with the key
    assert seen["key"] == token.split("_")[1]
    assert seen["subprotocols"] == ["bearer"] and seen["protocol_header"] == "bearer"
    assert token not in json.dumps(seen)


def test_the_app_may_still_choose_its_own_subprotocol(client: TestClient, token: str) -> None:
    offered = ["comfy", "bearer", f"bearer.{token}"]
    with client.websocket_connect("/v1/ws", subprotocols=offered) as ws:
        seen = ws.receive_json()
        assert ws.accepted_subprotocol == "comfy"
    assert seen["subprotocols"] == ["comfy", "bearer"]


def test_without_the_denial_extension_a_websocket_is_closed_with_1008(store: KeyStore) -> None:
    reached: list[bool] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    sent: list[Message] = []
    scope = {"type": "websocket", "path": "/v1/ws", "headers": [], "subprotocols": []}

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = ApiKeyMiddleware(inner, KeyStore(Path("/nonexistent/k.json")))
    asyncio.run(middleware(scope, receive, send))
    assert reached == []
    assert [m["type"] for m in sent] == ["websocket.close"] and sent[0]["code"] == 1008


def test_a_websocket_closed_by_the_app_still_works_behind_the_middleware(
    client: TestClient, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with client.websocket_connect("/v1/ws", headers=headers) as ws:
        ws.receive_json()
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
