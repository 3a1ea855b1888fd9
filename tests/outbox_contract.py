"""The outbox contract: relay batches are all-or-nothing and guarded by the cursor, each job's
deliveries come due one at a time in order, dead letters stay until redelivered, listings page.

Not collected by itself: `tests/unit/test_webhooks_outbox.py` runs it on memory and SQLite,
`tests/integration/test_webhooks_outbox_postgres.py` on a real PostgreSQL.
"""

from __future__ import annotations

import pytest

from comfyfleet.webhooks import (
    DeliveryNotFailed,
    DeliveryNotFound,
    DeliveryState,
    InvalidDeliveryCursor,
    NewDelivery,
    Outbox,
    OutboxError,
)
from tests.event_loop import run

NOW = 1_000_000.0


def new(seq: int, job: str, kind: str = "job.succeeded") -> NewDelivery:
    return NewDelivery(
        id=f"msg_{seq}", event_seq=seq, job_id=job, type=kind, url="https://x.test/h", body="{}"
    )


def test_relay_stores_a_batch_and_moves_the_cursor_once(outbox: Outbox) -> None:
    async def scenario() -> None:
        assert await outbox.relay_cursor() == 0
        assert await outbox.relay(0, 7, [new(3, "a"), new(5, "b")], now=NOW)
        assert await outbox.relay_cursor() == 7
        # A second relay that read from the old cursor stores nothing.
        assert not await outbox.relay(0, 7, [new(3, "a"), new(5, "b")], now=NOW)
        rows, _ = await outbox.list_deliveries()
        assert [r.id for r in rows] == ["msg_5", "msg_3"]
        first = await outbox.get("msg_3")
        assert (first.state, first.attempts, first.created_at) == ("pending", 0, NOW)
        assert first.next_attempt_at == NOW and first.first_attempt_at is None
        # A batch without deliveries (no job asked for these events) still moves the cursor.
        assert await outbox.relay(7, 9, [], now=NOW)
        assert await outbox.relay_cursor() == 9

    run(scenario())


def test_a_batch_that_would_repeat_an_event_stores_nothing(outbox: Outbox) -> None:
    async def scenario() -> None:
        assert await outbox.relay(0, 3, [new(3, "a")], now=NOW)
        with pytest.raises(OutboxError):
            await outbox.relay(
                3, 8, [new(8, "b"), NewDelivery("msg_x", 3, "a", "t", "u", "{}")], now=NOW
            )
        assert await outbox.relay_cursor() == 3
        rows, _ = await outbox.list_deliveries()
        assert [r.id for r in rows] == ["msg_3"]

    run(scenario())


def test_only_the_oldest_pending_delivery_of_each_job_is_due(outbox: Outbox) -> None:
    async def scenario() -> None:
        batch = [new(1, "a"), new(2, "b"), new(3, "a"), new(4, "a"), new(5, "b")]
        await outbox.relay(0, 5, batch, now=NOW)
        assert [d.id for d in await outbox.due(NOW, 10)] == ["msg_1", "msg_2"]
        assert await outbox.due(NOW - 1, 10) == []
        # a's head is retried later: b's head is due first, a's later ones must wait.
        assert await outbox.mark_retry("msg_1", next_at=NOW + 30, status=503, error="x", now=NOW)
        assert [d.id for d in await outbox.due(NOW + 1, 10)] == ["msg_2"]
        assert await outbox.next_due_at() == NOW
        assert await outbox.next_due_at(after=NOW) == NOW + 30
        assert [d.id for d in await outbox.due(NOW + 30, 10)] == ["msg_2", "msg_1"]
        assert [d.id for d in await outbox.due(NOW + 30, 1)] == ["msg_2"]
        # Delivering a head, or dead-lettering it, lets the job's next one go.
        assert await outbox.mark_delivered("msg_1", status=200, now=NOW + 31)
        assert await outbox.mark_failed("msg_2", status=None, error="refused", now=NOW + 31)
        assert [d.id for d in await outbox.due(NOW + 31, 10)] == ["msg_3", "msg_5"]

    run(scenario())


def test_attempts_are_recorded(outbox: Outbox) -> None:
    async def scenario() -> None:
        await outbox.relay(0, 1, [new(1, "a")], now=NOW)
        await outbox.mark_retry("msg_1", next_at=NOW + 5, status=500, error="boom", now=NOW + 1)
        await outbox.mark_retry("msg_1", next_at=NOW + 9, status=None, error="refused", now=NOW + 6)
        row = await outbox.get("msg_1")
        assert (row.attempts, row.first_attempt_at, row.last_attempt_at) == (2, NOW + 1, NOW + 6)
        assert (row.next_attempt_at, row.last_status, row.last_error) == (NOW + 9, None, "refused")
        await outbox.mark_delivered("msg_1", status=204, now=NOW + 10)
        row = await outbox.get("msg_1")
        assert (row.state, row.attempts, row.delivered_at, row.last_status) == (
            DeliveryState.DELIVERED,
            3,
            NOW + 10,
            204,
        )
        assert row.last_error is None and row.first_attempt_at == NOW + 1
        # A delivery that is no longer pending is left alone.
        assert not await outbox.mark_failed("msg_1", status=500, error="late", now=NOW + 11)
        assert not await outbox.mark_retry("msg_1", next_at=0, status=1, error="", now=NOW)
        assert not await outbox.mark_delivered("nope", status=200, now=NOW)
        assert (await outbox.get("msg_1")).state == "delivered"

    run(scenario())


def test_redeliver_gives_a_dead_letter_a_fresh_window(outbox: Outbox) -> None:
    async def scenario() -> None:
        await outbox.relay(0, 2, [new(1, "a"), new(2, "a")], now=NOW)
        await outbox.mark_failed("msg_1", status=410, error="the receiver answered 410", now=NOW)
        await outbox.mark_delivered("msg_2", status=200, now=NOW + 1)
        with pytest.raises(DeliveryNotFailed, match="delivered"):
            await outbox.redeliver("msg_2", now=NOW + 2)
        with pytest.raises(DeliveryNotFound):
            await outbox.redeliver("msg_none", now=NOW + 2)
        again = await outbox.redeliver("msg_1", now=NOW + 100)
        assert (again.state, again.attempts, again.first_attempt_at) == ("pending", 0, None)
        assert (again.next_attempt_at, again.failed_at) == (NOW + 100, None)
        assert again.last_error == "the receiver answered 410"  # history is kept until next try
        assert [d.id for d in await outbox.due(NOW + 100, 10)] == ["msg_1"]
        with pytest.raises(DeliveryNotFailed, match="pending"):
            await outbox.redeliver("msg_1", now=NOW + 101)

    run(scenario())


def test_listings_filter_by_state_and_page_newest_first(outbox: Outbox) -> None:
    async def scenario() -> None:
        await outbox.relay(0, 7, [new(i, f"job{i}") for i in range(1, 8)], now=NOW)
        for i in (2, 4, 6):
            await outbox.mark_failed(f"msg_{i}", status=500, error="x", now=NOW)
        seen: list[str] = []
        cursor: str | None = None
        while True:
            rows, cursor = await outbox.list_deliveries(limit=3, cursor=cursor)
            seen += [r.id for r in rows]
            if cursor is None:
                break
        assert seen == [f"msg_{i}" for i in range(7, 0, -1)]
        failed, more = await outbox.list_deliveries(state=DeliveryState.FAILED, limit=3)
        assert ([r.id for r in failed], more) == (["msg_6", "msg_4", "msg_2"], None)
        pending, more = await outbox.list_deliveries(state=DeliveryState.PENDING, limit=2)
        assert [r.id for r in pending] == ["msg_7", "msg_5"] and more is not None
        rest, _ = await outbox.list_deliveries(state=DeliveryState.PENDING, cursor=more)
        assert [r.id for r in rest] == ["msg_3", "msg_1"]
        with pytest.raises(InvalidDeliveryCursor):
            await outbox.list_deliveries(cursor="abc")

    run(scenario())


def test_count_by_state_follows_each_delivery(outbox: Outbox) -> None:
    async def scenario() -> None:
        states = (DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.FAILED)
        assert [await outbox.count(s) for s in states] == [0, 0, 0]
        await outbox.relay(0, 5, [new(i, f"job{i}") for i in range(1, 6)], now=NOW)
        assert [await outbox.count(s) for s in states] == [5, 0, 0]
        await outbox.mark_delivered("msg_1", status=200, now=NOW)
        await outbox.mark_failed("msg_2", status=410, error="gone", now=NOW)
        await outbox.mark_failed("msg_3", status=500, error="x", now=NOW)
        await outbox.mark_retry("msg_4", next_at=NOW + 5, status=500, error="x", now=NOW)
        assert [await outbox.count(s) for s in states] == [2, 1, 2]
        await outbox.redeliver("msg_2", now=NOW + 1)
        assert [await outbox.count(s) for s in states] == [3, 1, 1]

    run(scenario())


def test_prune_removes_spent_deliveries_by_age_and_never_a_pending_one(outbox: Outbox) -> None:
    async def scenario() -> None:
        bodies = ["{}", '{"text":"café"}', '{"n":1}', '{"n":22}', '{"n":333}']
        batch = [
            NewDelivery(f"msg_{i}", i, f"job{i}", "job.succeeded", "https://x.test/h", body)
            for i, body in enumerate(bodies, start=1)
        ]
        await outbox.relay(0, 5, batch, now=NOW)
        await outbox.mark_delivered("msg_1", status=200, now=NOW + 10)
        await outbox.mark_delivered("msg_2", status=200, now=NOW + 20)
        await outbox.mark_failed("msg_3", status=500, error="x", now=NOW + 10)
        await outbox.mark_failed("msg_4", status=500, error="x", now=NOW + 30)
        # msg_5 stays pending, however old.
        delivered, failed = DeliveryState.DELIVERED, DeliveryState.FAILED
        size = len('{"text":"café"}'.encode())  # bytes, not characters
        assert await outbox.prune(delivered, NOW + 21, dry_run=True) == (2, 2 + size)
        assert await outbox.prune(failed, NOW + 30, dry_run=True) == (1, 7)
        rows, _ = await outbox.list_deliveries()
        assert len(rows) == 5  # a dry run removes nothing
        assert await outbox.prune(delivered, NOW + 20) == (1, 2)
        assert await outbox.prune(failed, NOW + 31) == (2, 15)
        assert await outbox.prune(failed, NOW + 31) == (0, 0)
        rows, _ = await outbox.list_deliveries()
        assert [(r.id, r.state) for r in rows] == [("msg_5", "pending"), ("msg_2", "delivered")]
        with pytest.raises(ValueError, match="pending"):
            await outbox.prune(DeliveryState.PENDING, NOW + 1000)
        assert (await outbox.get("msg_5")).state == "pending"

    run(scenario())
