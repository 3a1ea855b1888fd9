"""`/metrics` on the gateway app, in-process: the job totals followed from the store's events,
the fleet's gauges read from the store at scrape time (once for any number of scrapers, never
holding up another request), who may scrape, and what never becomes a label."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from comfyfleet.auth import ADMIN, READ, SUBMIT, KeyStore
from comfyfleet.gateway import ServeSettings, Service, create_app
from comfyfleet.jobs import AgentRecord, InstanceRecord, MemoryJobStore, MemoryRegistry, NewJob
from comfyfleet.metrics import (
    JobTally,
    Metrics,
    MetricsSettings,
    count_jobs,
    metrics_router,
    priority_labels,
    watch_fleet,
)
from comfyfleet.webhooks import MemoryOutbox, NewDelivery

T = TypeVar("T")
BOOM = {"code": "node_error", "message": "node 1 (FleetFail): RuntimeError", "retryable": False}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def one(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


async def scrape(app: Any, path: str = "/metrics", **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.get(path, headers=headers)


def gateway(
    tmp_path: Path,
    store: MemoryJobStore,
    metrics: Metrics,
    *,
    keys: KeyStore | None = None,
    public: tuple[str, ...] = ("/health",),
) -> Any:
    service = Service(store=store, output_dir=tmp_path / "out", settings=ServeSettings())
    routers = (metrics_router(metrics),)
    return create_app(service, routers=routers, keys=keys, public_paths=public)


def test_job_totals_count_what_ended_after_the_gateway_started(tmp_path: Path) -> None:
    async def scenario() -> str:
        store = MemoryJobStore()
        await store.enqueue(NewJob("before", {}))
        await store.cancel("before")  # ended before: not this gateway's to count
        metrics = Metrics()
        tally = await count_jobs(metrics, store)
        for name in ("ok1", "ok2", "bad", "retried", "gone", "queued"):
            await store.enqueue(NewJob(name, {}, max_attempts=2))
        for expected in ("ok1", "ok2", "bad", "retried"):
            job = await store.claim("w", lease_s=30)
            assert job is not None and job.id == expected
        await store.complete("ok1", "w", [])
        await store.complete("ok2", "w", [])
        await store.fail("bad", "w", BOOM, retryable=False)
        await store.fail("retried", "w", {"code": "instance_lost"}, retryable=True)
        await store.cancel("gone")
        await tally.catch_up()
        text = (await scrape(gateway(tmp_path, store, metrics))).text
        await metrics.close()
        return text

    text = run(scenario())
    assert one(text, "comfyfleet_jobs_total", status="succeeded") == 2
    assert one(text, "comfyfleet_jobs_total", status="failed") == 1
    assert one(text, "comfyfleet_jobs_total", status="cancelled") == 1
    assert one(text, "comfyfleet_jobs_submitted_total") == 6
    assert one(text, "comfyfleet_job_retries_total") == 1
    assert one(text, "comfyfleet_job_failures_total", code="node_error") == 1
    assert "ok1" not in text and "retried" not in text  # no job id is ever a label


def test_the_tally_follows_on_its_own_and_reads_in_batches(tmp_path: Path) -> None:
    async def scenario() -> JobTally:
        store = MemoryJobStore()
        metrics = Metrics(MetricsSettings(follow_s=0.02))
        tally = await count_jobs(metrics, store)
        for i in range(1200):  # more events than one read takes
            await store.enqueue(NewJob(f"j{i}", {}))
            await store.cancel(f"j{i}")
        deadline = time.monotonic() + 5
        while tally.jobs.labels("cancelled")._value.get() < 1200:
            assert time.monotonic() < deadline, "the tally did not catch up"
            await asyncio.sleep(0.02)
        await metrics.close()
        return tally

    tally = run(scenario())
    assert tally.submitted._value.get() == 1200


def test_fleet_gauges_show_the_queue_instances_and_webhook_backlog(tmp_path: Path) -> None:
    async def scenario() -> str:
        store, registry, outbox = MemoryJobStore(), MemoryRegistry(), MemoryOutbox()
        for i, priority in enumerate([0, 0, 7, -1, 7, 7]):
            await store.enqueue(NewJob(f"q{i}", {}, priority=priority))
        await store.claim("w", lease_s=30)  # one of priority 7 runs
        now = time.time()
        live, dead = AgentRecord("a1", "h1", "1", now), AgentRecord("a2", "h2", "1", now)
        await registry.report(
            live,
            [InstanceRecord("a1", 0, "u", "ready"), InstanceRecord("a1", 1, "u", "backoff")],
        )
        await registry.report(dead, [InstanceRecord("a2", 0, "u", "busy")], now=now - 600)
        rows = [
            NewDelivery(f"m{i}", i, "q0", "job.succeeded", "https://x.test", "{}")
            for i in (1, 2, 3)
        ]
        await outbox.relay(0, 3, rows, now=now)
        await outbox.mark_failed("m1", status=410, error="gone", now=now)
        metrics = Metrics()
        watch_fleet(metrics, store, registry, outbox, agent_timeout_s=15)
        text = (await scrape(gateway(tmp_path, store, metrics))).text
        await metrics.close()
        return text

    text = run(scenario())
    assert one(text, "comfyfleet_queue_depth", priority="7") == 2
    assert one(text, "comfyfleet_queue_depth", priority="0") == 2
    assert one(text, "comfyfleet_queue_depth", priority="-1") == 1
    assert one(text, "comfyfleet_jobs_running") == 1
    assert one(text, "comfyfleet_instances", state="ready") == 1
    assert one(text, "comfyfleet_instances", state="backoff") == 1
    assert one(text, "comfyfleet_instances", state="gone") == 1
    assert one(text, "comfyfleet_instances", state="busy") == 0  # its agent went silent
    assert one(text, "comfyfleet_agents_alive") == 1
    assert one(text, "comfyfleet_webhook_deliveries", state="pending") == 2
    assert one(text, "comfyfleet_webhook_deliveries", state="failed") == 1
    assert one(text, "comfyfleet_metrics_source_age_seconds", source="fleet") < 5


def test_priority_labels_are_bounded() -> None:
    queued = {p: 1 for p in range(100, 0, -5)}  # twenty priorities
    labels = priority_labels(queued)
    assert len(labels) == 10
    assert labels[:3] == [("100", 1), ("95", 1), ("90", 1)]
    assert labels[-1] == ("other", 11)  # the lowest eleven (and the empty priority 0)
    assert sum(n for _, n in labels) == 20
    assert priority_labels({}) == [("0", 0)]


class SlowStore(MemoryJobStore):
    """A store whose queue count takes `delay_s` (a link to the database that hangs)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.reads = 0

    async def queue_depths(self) -> dict[int, int]:
        self.reads += 1
        await asyncio.sleep(self.delay_s)
        return await super().queue_depths()


def test_a_slow_store_delays_no_other_request_and_costs_one_read(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[float], float, list[httpx.Response], int, str]:
        store = SlowStore(delay_s=30.0)
        await store.enqueue(NewJob("waiting", {}))
        metrics = Metrics(MetricsSettings(scrape_wait_s=0.5))
        watch_fleet(metrics, store, MemoryRegistry(), MemoryOutbox(), agent_timeout_s=15)
        app = gateway(tmp_path, store, metrics)
        began = time.monotonic()

        async def timed(path: str) -> tuple[float, httpx.Response]:
            answer = await scrape(app, path)
            return time.monotonic() - began, answer

        scrapes = [asyncio.create_task(timed("/metrics")) for _ in range(5)]
        await asyncio.sleep(0.05)
        health_s, health = await timed("/health")
        assert health.status_code == 200
        done = await asyncio.gather(*scrapes)
        reads = store.reads
        after = (await scrape(app)).text  # still stale: the one read is still under way
        await metrics.close()
        return [s for s, _ in done], health_s, [a for _, a in done], reads, after

    scrape_s, health_s, answers, reads, after = run(scenario())
    # The store's read takes 30 s: answers well before that were not held by it (the bounds
    # are wide because this is a shared machine; the scrapes wait their 0.5 s, not the read).
    assert health_s < 5.0
    assert all(0.4 < s < 5.0 for s in scrape_s), scrape_s
    assert all(a.status_code == 200 for a in answers)
    assert reads == 1
    # Nothing was read yet: the gauges show their empty start, and say how old they are.
    assert one(answers[0].text, "comfyfleet_queue_depth", priority="0") == 0
    assert str(one(after, "comfyfleet_metrics_source_age_seconds", source="fleet")) == "nan"


def test_a_store_that_fails_leaves_the_last_numbers_and_counts_the_failure(tmp_path: Path) -> None:
    class FlakyStore(MemoryJobStore):
        broken = False

        async def queue_depths(self) -> dict[int, int]:
            if self.broken:
                raise ConnectionError("store down")
            return await super().queue_depths()

    async def scenario() -> tuple[str, str]:
        store = FlakyStore()
        await store.enqueue(NewJob("a", {}))
        metrics = Metrics(MetricsSettings(refresh_s=0.01))
        watch_fleet(metrics, store, MemoryRegistry(), MemoryOutbox(), agent_timeout_s=15)
        app = gateway(tmp_path, store, metrics)
        first = (await scrape(app)).text
        store.broken = True
        await asyncio.sleep(0.02)
        second = (await scrape(app)).text
        await metrics.close()
        return first, second

    first, second = run(scenario())
    assert one(first, "comfyfleet_queue_depth", priority="0") == 1
    assert one(second, "comfyfleet_queue_depth", priority="0") == 1
    assert one(second, "comfyfleet_metrics_source_failures_total", source="fleet") == 1


def test_with_keys_on_only_admin_keys_scrape_unless_the_path_is_public(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    admin = keys.create("ops", scopes=frozenset({ADMIN})).token
    user = keys.create("user", scopes=frozenset({SUBMIT, READ})).token

    async def scenario() -> list[int]:
        store = MemoryJobStore()
        metrics = Metrics()
        closed = gateway(tmp_path, store, metrics, keys=keys)
        opened = gateway(tmp_path, store, metrics, keys=keys, public=("/health", "/metrics"))
        answers = [
            await scrape(closed),
            await scrape(closed, Authorization=f"Bearer {user}"),
            await scrape(closed, Authorization=f"Bearer {admin}"),
            await scrape(opened),
        ]
        await metrics.close()
        return [a.status_code for a in answers]

    assert run(scenario()) == [401, 403, 200, 200]


def test_each_app_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.work.phase("queued", 1.0)
    assert (
        first.registry.get_sample_value("comfyfleet_job_phase_seconds_count", {"phase": "queued"})
        == 1
    )
    assert (
        second.registry.get_sample_value("comfyfleet_job_phase_seconds_count", {"phase": "queued"})
        is None
    )  # the second made no WorkMetrics: a gateway alone shows no agent numbers
