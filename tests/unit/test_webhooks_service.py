"""The running service: `notify` gets new events out, and `stop` is prompt and loses nothing
(pending retries and attempts cut short stay in the outbox)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from comfyfleet.webhooks import (
    DeliveryState,
    MemoryOutbox,
    WebhookConfigError,
    WebhookService,
    WebhookSettings,
    generate_secret,
    verify,
)
from tests.unit.test_webhooks_relay import FakeSource, hook

T = TypeVar("T")
SECRET = generate_secret()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings(**changes: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "secret": SECRET,
        "initial_backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "retry_for_s": 60.0,
        "poll_s": 3600.0,  # only notify() and the schedule may wake the loops here
        "allow_private_targets": True,
    }
    return WebhookSettings.model_validate(values | changes)


async def local_dns(host: str, port: int) -> list[str]:
    """Every name is this machine (the mock transport answers; nothing is sent)."""
    return ["127.0.0.1"]


async def until(check: Callable[[], Coroutine[Any, Any, bool]], limit_s: float = 10) -> None:
    """Wait until `check()` holds; the limit only stops a broken test from hanging."""
    async with asyncio.timeout(limit_s):
        while not await check():
            await asyncio.sleep(0.005)


async def states(outbox: MemoryOutbox) -> list[str]:
    rows, _ = await outbox.list_deliveries(limit=1000)
    return [str(r.state) for r in rows]


def test_a_service_without_a_secret_refuses_to_start() -> None:
    with pytest.raises(WebhookConfigError, match="signing secret"):
        WebhookService(FakeSource(), MemoryOutbox(), WebhookSettings())


def test_notified_events_are_delivered_in_order_and_verified() -> None:
    source, outbox = FakeSource(), MemoryOutbox()
    got: list[tuple[str, str]] = []
    fails = {"job1": 2}

    def receiver(request: httpx.Request) -> httpx.Response:
        body = request.read()
        verify(SECRET, dict(request.headers), body)
        job = request.url.path.rsplit("/", 1)[-1]
        if fails.get(job, 0) > 0:
            fails[job] -= 1
            return httpx.Response(503)
        got.append((job, request.headers["webhook-id"]))
        return httpx.Response(200)

    async def scenario() -> None:
        service = WebhookService(
            source,
            outbox,
            settings(concurrency=2),
            resolve=local_dns,
            transport=httpx.MockTransport(receiver),
        )
        async with service:
            for i in range(4):
                source.add(f"job{i}", hook(["*"], url=f"http://hooks.test/job{i}"))
                source.finish(f"job{i}", progress=2)
            service.notify()
            await until(lambda: _all(outbox, "delivered", 4 * 6))

    run(scenario())
    for i in range(4):
        ids = [msg for job, msg in got if job == f"job{i}"]
        assert len(ids) == len(set(ids)) == 6
    rows = run(_rows_by_id(outbox))
    for i in range(4):
        seqs = [rows[msg] for job, msg in got if job == f"job{i}"]
        assert seqs == sorted(seqs)


async def _all(outbox: MemoryOutbox, state: str, count: int) -> bool:
    found = await states(outbox)
    return len(found) == count and set(found) == {state}


async def _rows_by_id(outbox: MemoryOutbox) -> dict[str, int]:
    rows, _ = await outbox.list_deliveries(limit=1000)
    return {r.id: r.event_seq for r in rows}


def test_stop_is_prompt_with_retries_waiting_and_keeps_them() -> None:
    source, outbox = FakeSource(), MemoryOutbox()
    source.add("a", hook(["queued"], url="http://hooks.test/a"))
    config = settings(initial_backoff_s=3600.0, max_backoff_s=3600.0)

    async def scenario() -> None:
        service = WebhookService(
            source,
            outbox,
            config,
            resolve=local_dns,
            transport=httpx.MockTransport(lambda r: httpx.Response(500)),
            rand=lambda: 1.0,
        )
        service.start()
        service.notify()
        await until(lambda: _attempted(outbox))
        async with asyncio.timeout(10):  # a hang guard, not a speed check
            await service.stop()
        (row,) = (await outbox.list_deliveries())[0]
        assert (row.state, row.attempts, row.last_status) == (DeliveryState.PENDING, 1, 500)

    run(scenario())


async def _attempted(outbox: MemoryOutbox) -> bool:
    rows, _ = await outbox.list_deliveries()
    return bool(rows) and rows[0].attempts > 0


@pytest.mark.parametrize("grace", [0.0, 5.0])
def test_stop_lets_an_attempt_on_the_wire_finish_or_leaves_it_pending(grace: float) -> None:
    source, outbox = FakeSource(), MemoryOutbox()
    source.add("a", hook(["queued"], url="http://hooks.test/a"))

    async def scenario() -> None:
        arrived, release = asyncio.Event(), asyncio.Event()

        async def receiver(request: httpx.Request) -> httpx.Response:
            arrived.set()
            await release.wait()
            return httpx.Response(200)

        service = WebhookService(
            source,
            outbox,
            settings(stop_grace_s=grace),
            resolve=local_dns,
            transport=httpx.MockTransport(receiver),
        )
        service.start()
        service.notify()
        async with asyncio.timeout(10):
            await arrived.wait()
        stopping = asyncio.create_task(service.stop())
        await asyncio.sleep(0.01)
        release.set()
        async with asyncio.timeout(10):
            await stopping
        (row,) = (await outbox.list_deliveries())[0]
        if grace:
            assert (row.state, row.attempts) == (DeliveryState.DELIVERED, 1)
        else:  # cut short: nothing recorded, so it is sent again after a restart
            assert (row.state, row.attempts) == (DeliveryState.PENDING, 0)

    run(scenario())


def test_a_redelivered_dead_letter_goes_out_when_the_sender_is_woken() -> None:
    source, outbox = FakeSource(), MemoryOutbox()
    source.add("a", hook(["queued"], url="http://hooks.test/a"))
    answers = [410, 200]

    def receiver(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0))

    async def scenario() -> None:
        async with WebhookService(
            source, outbox, settings(), resolve=local_dns, transport=httpx.MockTransport(receiver)
        ) as service:
            service.notify()
            await until(lambda: _all(outbox, "failed", 1))
            (row,) = (await outbox.list_deliveries())[0]
            await outbox.redeliver(row.id, now=row.created_at)
            service.wake_sender()
            await until(lambda: _all(outbox, "delivered", 1))

    run(scenario())
    assert answers == []


class SnapshotOutbox(MemoryOutbox):
    """Reads the due deliveries as they were when the read began, and answers only after the
    attempts under way have recorded their outcome: what a PostgreSQL read can do."""

    async def due(self, now: float, limit: int) -> list[Any]:
        snapshot = await super().due(now, limit)
        await asyncio.sleep(0.05)
        return snapshot


def test_a_delivery_that_ends_during_a_read_of_due_ones_is_not_sent_again() -> None:
    source, outbox = FakeSource(), SnapshotOutbox()
    sent: list[str] = []

    async def receiver(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["webhook-id"])
        await asyncio.sleep(0.01 * len(sent))  # attempts end one by one, some during a read
        return httpx.Response(200)

    async def scenario() -> None:
        service = WebhookService(
            source,
            outbox,
            settings(concurrency=4),
            resolve=local_dns,
            transport=httpx.MockTransport(receiver),
        )
        async with service:
            for i in range(6):
                source.add(f"job{i}", hook(["job.succeeded"], url=f"http://hooks.test/job{i}"))
                source.finish(f"job{i}")
            service.notify()
            await until(lambda: _all(outbox, "delivered", 6))
            await asyncio.sleep(0.3)  # several more reads of the due deliveries

    run(scenario())
    assert len(sent) == 6 and len(set(sent)) == 6
