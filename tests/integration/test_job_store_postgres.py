"""The job store contract on a real PostgreSQL, and what only PostgreSQL promises: stores in
several processes never claim one job twice, a notification wakes another process's waiters and
dispatchers, a lapsed lease goes to another worker and the old one's late result is refused,
killed connections lose nothing, migrations race safely, a bad URL is one clear line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from comfyfleet.config import load_settings
from comfyfleet.db import load_migrations, load_queries
from comfyfleet.jobs import (
    JobNotFound,
    JobOutput,
    JobStatus,
    JobStore,
    JobStoreError,
    NewJob,
    PostgresJobStore,
    QueueSignal,
    open_store,
    publish_all,
)
from comfyfleet.roles import open_backends
from comfyfleet.workspace import Workspace
from tests.job_store_contract import *  # noqa: F403  (the contract's tests, collected here)
from tests.job_store_contract import run
from tests.job_store_routing_contract import *  # noqa: F403  (routing's part of it)
from tests.postgres_server import scratch_database, terminate_backends
from tests.storage_servers import free_port

T = TypeVar("T")
RESET = """
TRUNCATE jobs, job_events, webhook_deliveries RESTART IDENTITY CASCADE;
UPDATE webhook_relay SET last_event_seq = 0;
"""


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RESET.encode())


@pytest.fixture
def store(postgres: str, loop: asyncio.Runner) -> Iterator[JobStore]:
    opened = loop.run(PostgresJobStore.open(postgres))
    reset(postgres)
    yield opened
    loop.run(opened.close())


@pytest.fixture
def two(postgres: str, loop: asyncio.Runner) -> Iterator[tuple[PostgresJobStore, ...]]:
    """Two store objects on one database: two processes' worth of pools and listeners."""
    first = loop.run(PostgresJobStore.open(postgres))
    second = loop.run(PostgresJobStore.open(postgres))
    reset(postgres)
    yield first, second
    loop.run(first.close())
    loop.run(second.close())


def job(job_id: str) -> NewJob:
    return NewJob(id=job_id, workflow={"1": {"class_type": "X", "inputs": {}}})


def test_stores_claiming_concurrently_never_claim_one_job_twice(
    two: tuple[PostgresJobStore, PostgresJobStore],
) -> None:
    first, second = two
    ids = [f"job-{i:03d}" for i in range(500)]

    async def claimer(store: PostgresJobStore, worker: str) -> list[str]:
        got = []
        while (claimed := await store.claim(worker, lease_s=60)) is not None:
            got.append(claimed.id)
            assert await store.complete(claimed.id, worker, []) is not None
        return got

    async def scenario() -> list[list[str]]:
        for start in range(0, 500, 50):
            await asyncio.gather(*(first.enqueue(job(i)) for i in ids[start : start + 50]))
        stores = [first, second, first, second]
        return await asyncio.gather(*(claimer(s, f"w{n}") for n, s in enumerate(stores)))

    claims = run(scenario())
    every = [job_id for got in claims for job_id in got]
    assert sorted(every) == ids  # each job exactly once
    assert all(claims), "every claimer got some: SKIP LOCKED let them work side by side"
    assert run(second.count(JobStatus.SUCCEEDED)) == 500


def test_a_call_postgresql_refuses_fails_alone_in_its_batch(store: JobStore) -> None:
    """Calls at once share a transaction; one the database refuses (a priority past its
    integer) must not take the others down with it."""

    async def scenario() -> list[object]:
        return await asyncio.gather(
            store.enqueue(job("good-1")),
            store.enqueue(NewJob(id="bad", workflow={}, priority=2**40)),
            store.enqueue(job("good-2")),
            return_exceptions=True,
        )

    good_1, bad, good_2 = run(scenario())
    assert isinstance(bad, psycopg.errors.NumericValueOutOfRange)
    assert isinstance(good_1, tuple) and isinstance(good_2, tuple)
    assert run(store.count(JobStatus.QUEUED)) == 2


def test_a_batch_of_events_is_all_or_none_and_keeps_each_jobs_order(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(job("a"))
        await store.enqueue(job("b"))
        before = await store.latest_event_seq()
        with pytest.raises(JobNotFound, match="'a, gone'"):
            await publish_all(store, [("a", "executed", {}), ("gone", "executed", {})])
        assert await store.events_since(before) == []  # nothing of the refused batch
        # Batches at once, for the same jobs in opposite orders: neither waits for the other in
        # a circle, and each job's events keep the order they were published in.
        first = [("a", "progress", {"n": n}) for n in range(5)] + [("b", "progress", {"n": 0})]
        second = [("b", "progress", {"n": n}) for n in range(1, 5)] + [("a", "executed", {})]
        await asyncio.gather(publish_all(store, first), publish_all(store, second))
        events = await store.events_since(before)
        a = [e.data.get("n", "end") for e in events if e.job_id == "a"]
        b = [e.data["n"] for e in events if e.job_id == "b"]
        assert a == [0, 1, 2, 3, 4, "end"] and b == [0, 1, 2, 3, 4]

    run(scenario())


def test_an_enqueue_is_on_disk_when_acknowledged(postgres: str) -> None:
    """Enqueues commit without waiting for the disk (dispatchers claim at once), then wait for
    it in a transaction of their own (`durable_mark`): that transaction's flush must cover the
    one before it. (Taking a transaction id writes nothing to the log, and so flushes nothing:
    this failed with such a mark.)"""
    queries = load_queries("comfyfleet.jobs", folder="sql/postgres")
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS durable_probe (n integer)")
        for _ in range(20):
            conn.execute(
                f"BEGIN; {queries['passing_commit']} INSERT INTO durable_probe VALUES (1); COMMIT"
            )
            (written,) = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone() or ()
            conn.execute(f"BEGIN; {queries['durable_mark']} COMMIT")
            (flushed,) = (
                conn.execute(
                    "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (written,)
                ).fetchone()
                or ()
            )
            assert flushed
        conn.execute("DROP TABLE durable_probe")


def test_a_notification_wakes_a_waiter_and_a_dispatcher_in_another_store(
    two: tuple[PostgresJobStore, PostgresJobStore],
) -> None:
    here, there = two
    assert isinstance(here, QueueSignal)
    woken = asyncio.Event()
    here.on_queued(woken.set)

    async def scenario() -> tuple[float, float]:
        await there.enqueue(job("a"))
        await asyncio.wait_for(woken.wait(), 2)
        (latest,) = await here.events("a")
        waiter = asyncio.create_task(here.wait_events("a", after=latest.seq, timeout=10))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        started = time.monotonic()
        await there.publish("a", "progress", {"value": 1})
        got = await asyncio.wait_for(waiter, 5)
        assert [e.data for e in got] == [{"value": 1}]
        woke_after = time.monotonic() - started
        woken.clear()
        await there.claim("w", lease_s=1, now=1.0)  # running: nothing to wake a dispatcher for
        await there.release_expired(now=5.0)  # back in the queue: that wakes one
        started = time.monotonic()
        await asyncio.wait_for(woken.wait(), 2)
        return woke_after, time.monotonic() - started

    event_latency, queued_latency = run(scenario())
    assert event_latency < 0.5 and queued_latency < 0.5


def test_a_lapsed_lease_goes_to_another_worker_and_the_late_result_is_refused(
    two: tuple[PostgresJobStore, PostgresJobStore],
) -> None:
    old, new = two

    async def scenario() -> None:
        await old.enqueue(job("a"), now=100.0)
        first = await old.claim("old", lease_s=10, now=101.0)
        assert first is not None and first.attempts == 1
        assert await new.release_expired(now=105.0) == []  # still leased
        assert await new.release_expired(now=112.0) == ["a"]
        second = await new.claim("new", lease_s=10, now=113.0)
        assert second is not None and (second.worker, second.attempts) == ("new", 2)
        assert await old.heartbeat("old", ["a"], lease_s=10) == []
        assert await old.complete("a", "old", [JobOutput(others={"late": True})]) is None
        assert await old.fail("a", "old", {"code": "x"}, retryable=False) is None
        assert await old.get("a") == second
        done = await new.complete("a", "new", [JobOutput(node_id="9")])
        assert done is not None and done.outputs == [JobOutput(node_id="9")]
        statuses = [e.data["status"] for e in await old.events("a") if e.kind == "status"]
        assert statuses == ["queued", "running", "queued", "running", "succeeded"]

    run(scenario())


def test_killed_connections_mid_burst_lose_nothing(postgres: str, loop: asyncio.Runner) -> None:
    """The store retries a call once on a fresh connection; a caller that still gets an error
    (the dispatcher's loops) tries again, and every job runs once to the end."""
    reset(postgres)
    store = loop.run(PostgresJobStore.open(postgres))
    watcher = loop.run(PostgresJobStore.open(postgres))
    ids = [f"job-{i:03d}" for i in range(300)]
    failures: list[str] = []

    async def retried(call: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await call()
            except JobStoreError as exc:
                failures.append(str(exc))
                await asyncio.sleep(0.01)

    async def kill_now_and_then(stop: asyncio.Event) -> int:
        kills = 0
        while not stop.is_set():
            await asyncio.sleep(0.05)
            kills += await asyncio.to_thread(terminate_backends, postgres)
        return kills

    async def enqueue_all() -> None:
        for start in range(0, 300, 20):
            batch = ids[start : start + 20]
            await asyncio.gather(*(retried(lambda i=i: store.enqueue(job(i))) for i in batch))

    async def work(worker: str) -> None:
        while True:
            claimed = await retried(lambda: store.claim(worker, lease_s=60))
            if claimed is None:
                return
            await retried(lambda c=claimed: store.complete(c.id, worker, []))

    async def scenario() -> int:
        stop = asyncio.Event()
        killer = asyncio.create_task(kill_now_and_then(stop))
        await enqueue_all()
        await asyncio.gather(*(work(f"w{n}") for n in range(4)))
        stop.set()
        kills = await killer
        # A claim whose answer was lost with its connection holds a lease nobody renews: once
        # it lapses the job goes back to the queue and runs (again) to the end.
        await retried(lambda: store.release_expired(now=time.time() + 3600))
        await asyncio.gather(*(work(f"late{n}") for n in range(2)))
        return kills

    try:
        assert run(scenario()) > 0
        jobs, _ = run(store.list_jobs(limit=1000))
        assert sorted(j.id for j in jobs) == ids
        assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}
        # The listener came back too: a notification reaches another store again.
        run(asyncio.wait_for(watcher._listener.listening.wait(), 10))
        (last,) = run(watcher.events(ids[0], after=run(store.events(ids[0]))[-2].seq))
        assert last.data["status"] == "succeeded"
    finally:
        run(store.close())
        run(watcher.close())
    assert all("job store postgresql://" in message for message in failures)


def test_the_listener_comes_back_after_its_connection_is_killed(
    two: tuple[PostgresJobStore, PostgresJobStore], postgres: str
) -> None:
    here, there = two

    async def scenario() -> None:
        await there.enqueue(job("a"))
        (latest,) = await here.events("a")
        waiter = asyncio.create_task(here.wait_events("a", after=latest.seq, timeout=10))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(terminate_backends, postgres)
        await there.publish("a", "progress", {"value": 1})  # maybe sent while nobody listened
        got = await asyncio.wait_for(waiter, 5)  # woken by the reconnection at the latest
        assert [e.data for e in got] == [{"value": 1}]
        await asyncio.wait_for(here._listener.listening.wait(), 5)
        waiter = asyncio.create_task(here.wait_events("a", after=got[-1].seq, timeout=10))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await there.publish("a", "progress", {"value": 2})
        assert [e.data for e in await asyncio.wait_for(waiter, 5)] == [{"value": 2}]
        assert time.monotonic() - started < 0.5

    run(scenario())


def test_migrations_race_safely_and_a_newer_schema_is_refused(loop: asyncio.Runner) -> None:
    with scratch_database() as url:

        async def both() -> list[list[int]]:
            stores = await asyncio.gather(*(PostgresJobStore.open(url) for _ in range(3)))
            migrated = [s.migrated for s in stores]
            for s in stores:
                await s.close()
            return migrated

        migrated = loop.run(both())
        known = [version for version, _, _ in load_migrations("comfyfleet.jobs", "sql/postgres")]
        assert known == list(range(1, len(known) + 1))
        assert sorted(migrated) == [[], [], known]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
        with pytest.raises(JobStoreError) as info:
            loop.run(PostgresJobStore.open(url))
        assert "schema version 99" in str(info.value) and f"({known[-1]})" in str(info.value)


def test_open_store_takes_both_schemes_and_names_an_unreachable_url(
    postgres: str, loop: asyncio.Runner, tmp_path: Path
) -> None:
    for scheme in ("postgresql://", "postgres://"):
        url = scheme + postgres.split("://", 1)[1]
        opened = loop.run(open_store(url, default_dir=tmp_path))
        assert isinstance(opened, PostgresJobStore)
        loop.run(opened.close())
    port = free_port()
    with pytest.raises(JobStoreError) as info:
        bad = f"postgresql://me:s3cret@127.0.0.1:{port}/jobs"
        loop.run(open_store(bad, default_dir=tmp_path))
    message = str(info.value)
    assert f"postgresql://me:***@127.0.0.1:{port}/jobs" in message
    assert "s3cret" not in message and "\n" not in message


def test_serve_opens_the_store_and_the_webhook_outbox_on_postgres(
    postgres: str, loop: asyncio.Runner, tmp_path: Path
) -> None:
    settings = load_settings({"workspace": tmp_path, "serve": {"store": postgres}})
    workspace = Workspace.from_settings(settings)
    workspace.prepare()

    async def kinds() -> tuple[str, str]:
        async with open_backends(settings, workspace) as backends:
            return type(backends.store).__name__, type(backends.outbox).__name__

    assert loop.run(kinds()) == ("PostgresJobStore", "PostgresOutbox")
