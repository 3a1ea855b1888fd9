"""`comfyfleet gc` on a PostgreSQL store, as run beside a fleet: it takes the store's retention
lease, forgets the old finished jobs with their events and the spent deliveries, keeps the live
jobs, and gives the lease back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.jobs import JobStatus, NewJob, PostgresJobStore, PostgresRegistry
from comfyfleet.webhooks import DeliveryState, NewDelivery, PostgresOutbox
from tests.event_loop import run
from tests.postgres_server import PostgresMissing, scratch_database

DAY = 86400.0


def gc(ws: Path, url: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "comfyfleet", "gc", "-w", str(ws), "--store", url, "--json", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    report: dict[str, object] = json.loads(done.stdout)
    return report


async def history(url: str) -> None:
    """Two jobs that ended 40 days ago, one 2 days ago, one queued, one running; an old
    delivered webhook and a pending one; the relay past every event."""
    now = time.time()
    store = await PostgresJobStore.open(url)
    outbox = await PostgresOutbox.open(url)
    try:
        for i, job_id in enumerate(["old-1", "old-2", "recent", "running", "queued"]):
            await store.enqueue(NewJob(id=job_id, workflow={}), now=now - 50 * DAY + i)
        for job_id, days in [("old-1", 40), ("old-2", 40), ("recent", 2)]:
            await store.cancel(job_id, now=now - days * DAY)
        assert (await store.claim("w", lease_s=3600)) is not None
        new = [
            NewDelivery(f"m{i}", i, "old-1", "job.cancelled", "https://x.test", "{}")
            for i in (1, 2)
        ]
        await outbox.relay(0, await store.latest_event_seq(), new, now=now - 9 * DAY)
        await outbox.mark_delivered("m1", status=200, now=now - 8 * DAY)
    finally:
        await outbox.close()
        await store.close()


async def state(url: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], bool]:
    store = await PostgresJobStore.open(url)
    outbox = await PostgresOutbox.open(url)
    registry = await PostgresRegistry.open(url)
    try:
        jobs = sorted((j.id, str(j.status)) for j in (await store.list_jobs())[0])
        deliveries = sorted((d.id, str(d.state)) for d in (await outbox.list_deliveries())[0])
        free = await registry.lead("retention", "someone-else", ttl_s=5)
        await registry.resign("retention", "someone-else")
        return jobs, deliveries, free
    finally:
        await registry.close()
        await outbox.close()
        await store.close()


@pytest.fixture
def url() -> Iterator[str]:
    """A database of this test's own: gc sees nothing but what the test stored."""
    try:
        with scratch_database() as made:
            yield made
    except PostgresMissing as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")


def test_gc_prunes_a_postgresql_store_and_gives_its_lease_back(tmp_path: Path, url: str) -> None:
    run(history(url))
    dry = gc(tmp_path, url, "--dry-run")
    kinds = dry["kinds"]
    assert isinstance(kinds, dict)
    assert [i["name"] for i in kinds["jobs"]["items"]] == ["old-1", "old-2"]
    assert kinds["events"]["count"] == 4 and kinds["webhooks_delivered"]["count"] == 1
    before, _, _ = run(state(url))
    assert len(before) == 5

    done = gc(tmp_path, url)
    assert done["kinds"] == kinds  # what the dry run listed is what went
    jobs, deliveries, lease_free = run(state(url))
    assert jobs == [
        ("queued", JobStatus.QUEUED),
        ("recent", JobStatus.CANCELLED),
        ("running", JobStatus.RUNNING),
    ]
    assert deliveries == [("m2", DeliveryState.PENDING)]
    assert lease_free
