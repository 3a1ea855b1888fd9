"""Browser sessions, sign-in, Basic auth and the CSRF rule of the API-key middleware."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from starlette.exceptions import StarletteDeprecationWarning

from comfyfleet.auth import (
    ApiKeyMiddleware,
    KeyStore,
    Sessions,
    key_lookup,
    key_of,
    safe_next,
    session_secret,
)
from comfyfleet.auth._session import same_origin, session_cookie, without_session_cookie

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketDenialResponse

SECRET = b"s" * 32
STATIC = "a-static-key-of-the-operator-0123456789"
SITE = "http://gw"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "api_keys.json", static_key=STATIC)


@pytest.fixture
def token(store: KeyStore) -> str:
    return store.create("browser").token


def sessions_for(store: KeyStore, clock: Clock | None = None) -> Sessions:
    return Sessions(SECRET, key_lookup(store, STATIC), ttl_s=3600, clock=clock or Clock())


# --- the cookie ---------------------------------------------------------------------------------


def test_a_cookie_stands_for_its_key_until_it_expires(store: KeyStore, token: str) -> None:
    clock = Clock()
    sessions = sessions_for(store, clock)
    record = store.verify(token)
    assert record is not None
    value = sessions.issue(record)
    assert token not in value and record.id in value
    assert sessions.verify(value) == record
    clock.now += 3599
    assert sessions.verify(value) == record
    clock.now += 2
    assert sessions.verify(value) is None


def test_a_changed_cookie_is_refused(store: KeyStore, token: str) -> None:
    sessions = sessions_for(store)
    record = store.verify(token)
    assert record is not None
    key_id, expires, mac = sessions.issue(record).split(".")
    other = store.create("other")
    assert sessions.verify(f"{key_id}.{int(expires) + 100}.{mac}") is None
    assert sessions.verify(f"{other.record.id}.{expires}.{mac}") is None
    assert sessions.verify(f"{key_id}.{expires}.{'0' * 64}") is None
    assert sessions.verify("garbage") is None
    forged = Sessions(b"x" * 32, key_lookup(store, STATIC), ttl_s=3600, clock=Clock())
    assert forged.verify(sessions.issue(record)) is None


def test_revoking_the_key_ends_its_sessions(store: KeyStore, token: str) -> None:
    sessions = sessions_for(store)
    record = store.verify(token)
    assert record is not None
    value = sessions.issue(record)
    store.revoke(record.id)
    assert sessions.verify(value) is None


def test_a_session_ends_no_later_than_its_key(store: KeyStore) -> None:
    issued = store.create("short", expires_in_s=60)
    sessions = Sessions(SECRET, key_lookup(store, STATIC), ttl_s=3600)  # the store's clock
    value = sessions.issue(issued.record)
    assert int(value.split(".")[1]) == int(issued.record.expires_at or 0)


def test_the_static_key_signs_in_and_a_changed_static_key_ends_it(
    store: KeyStore, tmp_path: Path
) -> None:
    record = store.verify(STATIC)
    assert record is not None
    value = sessions_for(store).issue(record)
    assert sessions_for(store).verify(value) == record
    changed = KeyStore(tmp_path / "api_keys.json", static_key=STATIC + "-new")
    lookup = key_lookup(changed, STATIC + "-new")
    assert Sessions(SECRET, lookup, ttl_s=3600, clock=Clock()).verify(value) is None


def test_the_session_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = session_secret(tmp_path)
    assert len(first) == 32 and session_secret(tmp_path) == first
    mode = stat.S_IMODE(os.stat(tmp_path / "session_secret").st_mode)
    assert mode == 0o600
    assert session_secret(tmp_path, "configured-secret") != first


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/instances/0/", "/instances/0/"),
        ("/a?b=c&d=%2F", "/a?b=c&d=%2F"),
        ("/ü", "/%C3%BC"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/a\r\nSet-Cookie: x=y", "/"),
        ("/" + "a" * 5000, "/"),
    ],
)
def test_next_is_only_ever_a_local_path(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


# --- request checks -----------------------------------------------------------------------------


def scope_with(*headers: tuple[str, str], kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "headers": [(k.encode(), v.encode()) for k, v in headers]}


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ((("host", "gw"), ("origin", "http://gw")), True),
        ((("host", "gw:443"), ("origin", "https://gw")), True),
        ((("host", "GW:8000"), ("origin", "http://gw:8000")), True),
        ((("host", "gw:8000"), ("origin", "http://gw:8001")), False),
        ((("host", "gw"), ("origin", "http://evil.example")), False),
        ((("host", "gw"), ("origin", "null")), False),
        ((("host", "gw"),), False),
        ((("host", "gw"), ("sec-fetch-site", "same-origin")), True),
        ((("host", "gw"), ("sec-fetch-site", "cross-site")), False),
    ],
)
def test_same_origin(headers: tuple[tuple[str, str], ...], same: bool) -> None:
    assert same_origin(scope_with(*headers)) is same


def test_the_session_cookie_is_found_and_removed_among_others() -> None:
    header = ("cookie", "theme=dark; comfyfleet_session=abc.1.ff; Comfy.Other=1")
    assert session_cookie(scope_with(header)) == "abc.1.ff"
    assert session_cookie(scope_with(("cookie", "bad;;=; x"))) is None
    kept = without_session_cookie([(b"cookie", header[1].encode()), (b"accept", b"*/*")])
    assert kept == [(b"cookie", b"theme=dark; Comfy.Other=1"), (b"accept", b"*/*")]
    assert without_session_cookie([(b"cookie", b"comfyfleet_session=x")]) == []


# --- the middleware -----------------------------------------------------------------------------


def make_app(store: KeyStore) -> ApiKeyMiddleware:
    app = FastAPI()

    @app.api_route("/v1/echo", methods=["GET", "POST"])
    async def echo(request: Request) -> dict[str, Any]:
        key = key_of(request.scope)
        return {
            "key": key.id if key else None,
            "cookie": request.headers.get("cookie"),
            "authorization": request.headers.get("authorization"),
        }

    @app.websocket("/v1/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        key = key_of(websocket.scope)
        await websocket.send_json({"key": key.id if key else None})
        await websocket.close()

    return ApiKeyMiddleware(app, store, sessions=sessions_for(store))


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def sign_in(app: Any, token: str) -> str:
    answer = call(app, "POST", "/login", data={"key": token, "next": "/v1/echo"})
    assert answer.status_code == 303
    return answer.headers["set-cookie"].split(";")[0]


def basic(user: str, password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def test_the_login_page_is_a_plain_form(store: KeyStore) -> None:
    page = call(make_app(store), "GET", "/login?next=/instances/0/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<form method=post action="/login">' in page.text
    assert "name=key" in page.text and 'value="/instances/0/"' in page.text
    assert "<script" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_signing_in_sets_a_safe_cookie_and_goes_back(store: KeyStore, token: str) -> None:
    app = make_app(store)
    answer = call(app, "POST", "/login", data={"key": token, "next": "/v1/echo?x=1"})
    assert (answer.status_code, answer.headers["location"]) == (303, "/v1/echo?x=1")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("comfyfleet_session=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"):
        assert attribute in cookie
    assert "Secure" not in cookie and token not in cookie


def test_the_cookie_is_secure_over_https(store: KeyStore, token: str) -> None:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="https://gw") as client:
            return await client.post("/login", data={"key": token})

    assert "Secure" in asyncio.run(go()).headers["set-cookie"]


def test_a_bad_key_shows_the_form_again(store: KeyStore) -> None:
    answer = call(make_app(store), "POST", "/login", data={"key": "cf_nope", "next": "/x"})
    assert answer.status_code == 401
    assert "That key is not valid" in answer.text and 'value="/x"' in answer.text
    assert "set-cookie" not in answer.headers
    empty = call(make_app(store), "POST", "/login", data={"key": ""})
    assert empty.status_code == 401 and "Enter an API key" in empty.text


def test_a_huge_or_foreign_sign_in_is_refused(store: KeyStore, token: str) -> None:
    app = make_app(store)
    huge = call(app, "POST", "/login", data={"key": "x" * 10_000})
    assert huge.status_code == 413
    foreign = call(app, "POST", "/login", data={"key": token}, headers={"Origin": "http://evil"})
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers


def test_the_cookie_authenticates_and_never_reaches_the_app(store: KeyStore, token: str) -> None:
    app = make_app(store)
    cookie = sign_in(app, token)
    answer = call(app, "GET", "/v1/echo", headers={"Cookie": f"theme=dark; {cookie}"})
    assert answer.status_code == 200
    assert answer.json() == {
        "key": token.split("_")[1],
        "cookie": "theme=dark",
        "authorization": None,
    }


def test_a_browser_without_credentials_is_sent_to_sign_in(store: KeyStore) -> None:
    app = make_app(store)
    page = call(app, "GET", "/v1/echo?a=1", headers={"Accept": "text/html,*/*"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fv1%2Fecho%3Fa%3D1"
    api = call(app, "GET", "/v1/echo", headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.json()["error"]["code"] == "unauthorized"
    assert "/login" in api.json()["error"]["message"]
    assert 'Basic realm="comfyfleet"' in api.headers["www-authenticate"]
    scripted = call(app, "GET", "/v1/echo", headers={"Sec-Fetch-Mode": "cors"})
    assert "Basic" not in scripted.headers["www-authenticate"]  # no browser password dialog


def test_an_ended_session_is_forgotten(store: KeyStore, token: str) -> None:
    app = make_app(store)
    cookie = sign_in(app, token)
    store.revoke(token.split("_")[1])
    page = call(app, "GET", "/v1/echo", headers={"Cookie": cookie, "Accept": "text/html"})
    assert page.status_code == 303 and "Max-Age=0" in page.headers["set-cookie"]
    api = call(app, "GET", "/v1/echo", headers={"Cookie": cookie})
    assert api.status_code == 401 and "session has ended" in api.json()["error"]["message"]


def test_basic_auth_takes_the_key_as_password(store: KeyStore, token: str) -> None:
    app = make_app(store)
    for headers in (basic("anyone", token), basic("", token), basic(token, "")):
        answer = call(app, "GET", "/v1/echo", headers=headers)
        assert answer.status_code == 200
        assert answer.json()["authorization"] is None
    assert call(app, "GET", "/v1/echo", headers=basic("anyone", "nope")).status_code == 401
    bad = {"Authorization": "Basic !!!not-base64"}
    assert call(app, "GET", "/v1/echo", headers=bad).status_code == 401


def test_cookie_posts_must_come_from_this_site(store: KeyStore, token: str) -> None:
    app = make_app(store)
    cookie = {"Cookie": sign_in(app, token)}
    assert call(app, "GET", "/v1/echo", headers=cookie).status_code == 200  # safe: no check
    refused = call(app, "POST", "/v1/echo", headers=cookie)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "cross_origin"
    evil = call(app, "POST", "/v1/echo", headers={**cookie, "Origin": "http://evil"})
    assert evil.status_code == 403
    same = call(app, "POST", "/v1/echo", headers={**cookie, "Origin": SITE})
    assert same.status_code == 200
    fetch = call(app, "POST", "/v1/echo", headers={**cookie, "Sec-Fetch-Site": "same-origin"})
    assert fetch.status_code == 200


def test_basic_posts_are_refused_only_when_a_browser_marks_them_foreign(
    store: KeyStore, token: str
) -> None:
    app = make_app(store)
    assert call(app, "POST", "/v1/echo", headers=basic("u", token)).status_code == 200
    foreign = {**basic("u", token), "Origin": "http://evil"}
    assert call(app, "POST", "/v1/echo", headers=foreign).status_code == 403
    bearer = {"Authorization": f"Bearer {token}", "Origin": "http://evil"}
    assert call(app, "POST", "/v1/echo", headers=bearer).status_code == 200  # never ambient


def test_a_cookie_opens_a_socket_only_from_this_site(store: KeyStore, token: str) -> None:
    app = make_app(store)
    cookie = sign_in(app, token)
    client = TestClient(app, base_url="http://testserver")
    same = {"Cookie": cookie, "Origin": "http://testserver"}
    with client.websocket_connect("/v1/ws", headers=same) as ws:
        assert ws.receive_json() == {"key": token.split("_")[1]}
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/v1/ws", headers={"Cookie": cookie, "Origin": "http://evil"}),
    ):
        pass
    assert denied.value.status_code == 403


def test_signing_out_clears_the_cookie(store: KeyStore, token: str) -> None:
    app = make_app(store)
    out = call(app, "POST", "/logout", headers={"Cookie": sign_in(app, token)})
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert call(app, "GET", "/logout").status_code == 405


def test_signed_in_the_login_page_says_who_and_offers_to_sign_out(
    store: KeyStore, token: str
) -> None:
    app = make_app(store)
    page = call(app, "GET", "/login", headers={"Cookie": sign_in(app, token)})
    assert page.status_code == 200
    assert token.split("_")[1] in page.text and 'action="/logout"' in page.text


def test_without_sessions_login_is_just_another_path(store: KeyStore, token: str) -> None:
    app = ApiKeyMiddleware(FastAPI(), store)
    assert call(app, "GET", "/login").status_code == 401
    assert call(app, "GET", "/login", headers={"Accept": "text/html"}).status_code == 401
