"""`/v1/webhooks/deliveries`: listing with state filter and cursor, one delivery, redeliver, and
the gateway's error shape for every mistake."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfyfleet.gateway._errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
)
from comfyfleet.gateway._webhooks_api import webhooks_router
from comfyfleet.webhooks import MemoryOutbox, NewDelivery

T = TypeVar("T")
NOW = 1_700_000_000.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make_app(outbox: MemoryOutbox, woken: list[str]) -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.include_router(
        webhooks_router(outbox, wake=lambda: woken.append("wake"), clock=lambda: NOW)
    )
    return app


async def filled() -> MemoryOutbox:
    outbox = MemoryOutbox()
    rows = [
        NewDelivery(f"msg_{i}", i, f"job{i}", "job.succeeded", "https://h.test/", f'{{"i":{i}}}')
        for i in range(1, 6)
    ]
    await outbox.relay(0, 5, rows, now=NOW)
    await outbox.mark_failed("msg_2", status=500, error="the receiver answered 500", now=NOW)
    await outbox.mark_failed("msg_4", status=None, error="ConnectError: refused", now=NOW)
    await outbox.mark_delivered("msg_5", status=200, now=NOW)
    return outbox


def test_deliveries_can_be_listed_read_and_redelivered() -> None:
    woken: list[str] = []

    async def scenario() -> None:
        outbox = await filled()
        transport = httpx.ASGITransport(app=make_app(outbox, woken))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            answer = await client.get("/v1/webhooks/deliveries", params={"state": "failed"})
            assert answer.status_code == 200
            body = answer.json()
            assert [d["id"] for d in body["deliveries"]] == ["msg_4", "msg_2"]
            assert body["next_cursor"] is None
            first = body["deliveries"][0]
            assert first["state"] == "failed" and first["last_error"] == "ConnectError: refused"
            assert first["payload"] == {"i": 4} and "body" not in first
            assert first["urls"]["redeliver"] == "/v1/webhooks/deliveries/msg_4/redeliver"

            page = (await client.get("/v1/webhooks/deliveries", params={"limit": 2})).json()
            assert [d["id"] for d in page["deliveries"]] == ["msg_5", "msg_4"]
            rest = await client.get(
                "/v1/webhooks/deliveries", params={"limit": 10, "cursor": page["next_cursor"]}
            )
            assert [d["id"] for d in rest.json()["deliveries"]] == ["msg_3", "msg_2", "msg_1"]

            one = (await client.get("/v1/webhooks/deliveries/msg_2")).json()
            assert (one["state"], one["last_status"], one["job_id"]) == ("failed", 500, "job2")

            again = await client.post("/v1/webhooks/deliveries/msg_2/redeliver")
            assert again.status_code == 200
            assert (again.json()["state"], again.json()["next_attempt_at"]) == ("pending", NOW)
            assert woken == ["wake"]
            assert (await outbox.get("msg_2")).state == "pending"

    run(scenario())


def test_mistakes_get_the_gateway_error_shape() -> None:
    async def scenario() -> None:
        outbox = await filled()
        transport = httpx.ASGITransport(app=make_app(outbox, []))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            cases = [
                ("GET", "/v1/webhooks/deliveries/msg_nope", 404, "delivery_not_found"),
                ("POST", "/v1/webhooks/deliveries/msg_nope/redeliver", 404, "delivery_not_found"),
                ("POST", "/v1/webhooks/deliveries/msg_5/redeliver", 409, "delivery_not_failed"),
                ("POST", "/v1/webhooks/deliveries/msg_1/redeliver", 409, "delivery_not_failed"),
                ("GET", "/v1/webhooks/deliveries?state=lost", 422, "invalid_request"),
                ("GET", "/v1/webhooks/deliveries?limit=0", 422, "invalid_request"),
                ("GET", "/v1/webhooks/deliveries?cursor=zz", 400, "invalid_cursor"),
            ]
            for method, url, status, code in cases:
                answer = await client.request(method, url)
                assert answer.status_code == status, url
                error = answer.json()["error"]
                assert set(error) == {"code", "message", "details"}
                assert error["code"] == code, url
            conflict = (await client.post("/v1/webhooks/deliveries/msg_5/redeliver")).json()
            assert conflict["error"]["details"]["state"] == "delivered"
            assert "delivered, not failed" in conflict["error"]["message"]

    run(scenario())
