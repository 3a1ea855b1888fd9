"""The request guard (`gateway._guard`): a server fault is one 500 in the error shape and one
log record, and the app keeps answering; a body that stops arriving is a 408."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from comfyfleet.gateway import ServeSettings, Service, create_app
from comfyfleet.jobs import MemoryJobStore


def _app(tmp_path: Path, **settings: Any) -> Any:
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    service = Service(
        store=MemoryJobStore(), output_dir=tmp_path / "out", settings=ServeSettings(**settings)
    )
    return create_app(service, routers=(router,))


def test_a_server_fault_is_a_500_in_the_error_shape_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=_app(tmp_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/boom"), await client.get("/health")

    with caplog.at_level(logging.ERROR, logger="comfyfleet.gateway"):
        failed, health = asyncio.run(go())
    assert failed.status_code == 500
    assert failed.json() == {
        "error": {
            "code": "internal_error",
            "message": "the server failed to answer this request; the failure is in its log",
            "details": {"method": "GET", "path": "/boom"},
        }
    }
    assert health.status_code == 200
    records = [r for r in caplog.records if r.name == "comfyfleet.gateway"]
    assert [r.getMessage() for r in records] == ["GET '/boom' failed"]
    assert records[0].exc_info is not None


def test_a_body_that_stops_arriving_is_a_408(tmp_path: Path) -> None:
    app = _app(tmp_path, body_timeout_s=0.2)
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": b'{"workfl', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.sleep(3600)  # the rest never comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/jobs",
        "raw_path": b"/v1/jobs",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("gw", 80),
        "client": ("127.0.0.1", 1),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    start = sent[0]
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert b'"code":"body_timeout"' in sent[1]["body"]
