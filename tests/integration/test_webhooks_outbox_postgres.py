"""The outbox contract on a real PostgreSQL, plus: it agrees with the memory outbox on a random
history, keeps everything across a reopen, needs the job store's tables, and two relays racing
on one cursor store each event once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from comfyfleet.jobs import PostgresJobStore
from comfyfleet.webhooks import MemoryOutbox, Outbox, OutboxError, PostgresOutbox
from tests.event_loop import run
from tests.integration.test_job_store_postgres import reset
from tests.outbox_contract import *  # noqa: F403  (the contract's tests, collected here)
from tests.outbox_contract import NOW, new
from tests.postgres_server import scratch_database
from tests.unit.test_webhooks_outbox import random_history, replay


@pytest.fixture
def migrated(postgres: str, loop: asyncio.Runner) -> str:
    """The run's database, migrated by the job store and emptied."""
    loop.run(loop.run(PostgresJobStore.open(postgres)).close())
    reset(postgres)
    return postgres


@pytest.fixture
def outbox(migrated: str, loop: asyncio.Runner) -> Iterator[Outbox]:
    box = loop.run(PostgresOutbox.open(migrated))
    yield box
    loop.run(box.close())


def test_postgres_agrees_with_memory_on_a_random_history(migrated: str) -> None:
    ops = random_history()
    box = run(PostgresOutbox.open(migrated))
    assert run(replay(box, ops)) == run(replay(MemoryOutbox(), ops))


def test_postgres_outbox_keeps_everything_across_a_reopen(migrated: str) -> None:
    box = run(PostgresOutbox.open(migrated))
    run(box.relay(0, 4, [new(2, "a"), new(4, "a")], now=NOW))
    run(box.mark_retry("msg_2", next_at=NOW + 60, status=502, error="bad gateway", now=NOW))
    run(box.close())
    with pytest.raises(OutboxError, match="closed"):
        run(box.relay_cursor())
    again = run(PostgresOutbox.open(migrated))
    try:
        assert run(again.relay_cursor()) == 4
        row = run(again.get("msg_2"))
        assert (row.attempts, row.next_attempt_at, row.last_error) == (1, NOW + 60, "bad gateway")
        assert run(again.due(NOW + 60, 10)) == [row]
    finally:
        run(again.close())


def test_racing_relays_store_each_event_once(migrated: str) -> None:
    async def scenario() -> list[bool]:
        boxes = [await PostgresOutbox.open(migrated) for _ in range(3)]
        try:
            batch = [new(i, "a") for i in range(1, 6)]
            return list(await asyncio.gather(*(b.relay(0, 5, batch, now=NOW) for b in boxes)))
        finally:
            for b in boxes:
                await b.close()

    assert sorted(run(scenario())) == [False, False, True]
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (5,)


def test_postgres_outbox_needs_the_job_store_tables(loop: asyncio.Runner) -> None:
    with scratch_database() as url, pytest.raises(OutboxError, match="no webhook outbox tables"):
        loop.run(PostgresOutbox.open(url))
