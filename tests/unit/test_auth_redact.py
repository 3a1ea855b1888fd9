"""Keys stay out of logs: what comfyfleet logs itself, and the filter for what others log."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import httpx
import pytest

from comfyfleet.auth import ApiKeyMiddleware, KeyStore, RedactKeys, redact
from comfyfleet.auth._middleware import Message, Receive, Scope, Send

KEY = "cf_abcd1234_" + "Zx9-_" * 9


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


def test_redact_masks_the_secret_and_keeps_the_id() -> None:
    assert redact(f"got {KEY}!") == "got cf_abcd1234_***!"
    assert redact(f"Authorization: Bearer {KEY}") == "Authorization: Bearer cf_abcd1234_***"
    assert redact("authorization: bearer s3cr3t-static-key-of-40-chars-xxxxxxx") == (
        "authorization: bearer ***"
    )
    assert redact(f"subprotocols ['bearer', 'bearer.{KEY}']") == (
        "subprotocols ['bearer', 'bearer.cf_abcd1234_***']"
    )
    assert redact("the bearer scheme is missing") == "the bearer scheme is missing"


def _logger_with_filter() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactKeys())
    logger = logging.getLogger(f"test.redact.{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_the_filter_masks_messages_and_arguments() -> None:
    logger, out = _logger_with_filter()
    logger.info("headers %s", [(b"authorization", f"Bearer {KEY}".encode())])
    logger.info("key=%s status=%d", KEY, 401)
    logger.info(f"inline {KEY}")
    logger.info("%(who)s sent %(key)s", {"who": "me", "key": KEY})
    text = out.getvalue()
    assert KEY not in text and KEY[12:] not in text
    assert "status=401" in text and "me sent cf_abcd1234_***" in text
    assert text.count("cf_abcd1234_***") == 4


def test_the_filter_keeps_the_shape_uvicorn_access_logs_need() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/jobs?oops={KEY}", "1.1", 200), None,
    )  # fmt: skip
    RedactKeys().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5
    expected = '127.0.0.1:5000 - "GET /v1/jobs?oops=cf_abcd1234_*** HTTP/1.1" 200'
    assert record.getMessage() == expected


def test_comfyfleet_never_logs_a_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every path through the store and the middleware, with all logging on and no filter."""
    store = KeyStore(tmp_path / "api_keys.json")
    good = store.create("good").token
    revoked = store.create("revoked")
    store.revoke(revoked.record.id)
    app = ApiKeyMiddleware(hello, store)
    tries = [good, revoked.token, good[:-2] + "xx", "garbage-" + good, f"cf_zzzzzzzz_{good[12:]}"]

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for token in tries:
                await client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
            await client.get("/v1/jobs")

    caplog.set_level(logging.DEBUG)
    asyncio.run(go())
    assert "refused GET /v1/jobs" in caplog.text  # refusals are logged ...
    assert f"(id {revoked.record.id})" in caplog.text  # ... by key id
    for token in (good, revoked.token):
        assert token not in caplog.text and token[12:] not in caplog.text
    assert "garbage" not in caplog.text


def test_a_refused_websocket_is_logged_without_its_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = KeyStore(tmp_path / "api_keys.json")
    token = store.create("x").token[:-1] + "!"
    scope = {"type": "websocket", "path": "/ws", "headers": [], "subprotocols": [f"bearer.{token}"]}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    caplog.set_level(logging.DEBUG)
    asyncio.run(ApiKeyMiddleware(hello, store)(scope, receive, send))
    assert sent[0]["code"] == 1008
    assert "refused WEBSOCKET /ws" in caplog.text and token[12:] not in caplog.text
