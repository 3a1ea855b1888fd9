"""The relay: every job event a webhook asked for becomes exactly one delivery, even when the relay
crashes before or after its transaction, or two relays share an outbox; the body is the
documented payload."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import pytest

from comfyfleet.jobs import JobEvent, JobNotFound, JobOptions, MemoryJobStore, NewJob, WebhookOption
from comfyfleet.webhooks import (
    DEFAULT_EVENTS,
    Delivery,
    MemoryOutbox,
    NewDelivery,
    Relay,
    event_type,
)

T = TypeVar("T")
NOW = 1_700_000_000.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class FakeJob:
    id: str
    options: JobOptions
    status: str = "queued"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "workflow": {"1": {}}}


@dataclass
class FakeSource:
    """The two job store calls the relay uses, over a list of events (seq = position + 1)."""

    jobs: dict[str, FakeJob] = field(default_factory=dict)
    log: list[JobEvent] = field(default_factory=list)

    def add(self, job_id: str, webhook: dict[str, Any] | None = None) -> FakeJob:
        job = FakeJob(
            job_id, JobOptions.from_json(None if webhook is None else {"webhook": webhook})
        )
        self.jobs[job_id] = job
        self.emit(job_id, "status", {"status": "queued"})
        return job

    def emit(self, job_id: str, kind: str, data: dict[str, Any] | None = None) -> JobEvent:
        event = JobEvent(len(self.log) + 1, job_id, kind, data or {}, NOW + len(self.log))
        self.log.append(event)
        if kind == "status":
            self.jobs[job_id].status = str(event.data["status"])
        return event

    def finish(self, job_id: str, progress: int = 0) -> None:
        """The events of a job's run, as the dispatcher and the store append them."""
        self.emit(job_id, "status", {"status": "running", "attempt": 1})
        self.emit(job_id, "started", {"instance": 0})
        for i in range(progress):
            self.emit(job_id, "progress", {"value": i + 1, "max": progress})
        self.emit(job_id, "status", {"status": "succeeded"})

    async def events_since(self, after: int, *, limit: int = 500) -> list[JobEvent]:
        await asyncio.sleep(0)  # a real store is a suspension point too
        return [e for e in self.log if e.seq > after][:limit]

    async def get(self, job_id: str) -> FakeJob:
        await asyncio.sleep(0)
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None


def hook(events: list[str] | None = None, url: str = "https://hooks.test/in") -> dict[str, Any]:
    return {"url": url, "events": events}


async def everything(outbox: MemoryOutbox) -> list[Delivery]:
    rows, _ = await outbox.list_deliveries(limit=1000)
    return sorted(rows, key=lambda d: d.seq)


def test_event_types_follow_the_job_store_kinds() -> None:
    assert event_type("status", {"status": "succeeded"}) == "job.succeeded"
    assert event_type("status", {"status": "queued"}) == "job.queued"
    assert event_type("status", {"status": "queued", "retry": True}) == "job.requeued"
    assert event_type("status", {"status": "running", "attempt": 2}) == "job.running"
    assert event_type("progress", {"value": 1}) == "job.progress"
    assert event_type("cancel_requested", {}) == "job.cancel_requested"
    assert DEFAULT_EVENTS == ("job.succeeded", "job.failed", "job.cancelled")


def test_each_wanted_event_becomes_one_delivery_and_others_none() -> None:
    source = FakeSource()
    source.add("quiet")  # no webhook: nothing is sent for it
    source.add("default", hook())
    source.add("chatty", hook(["progress", "job.succeeded", "job.queued"]))
    source.add("all", hook(["*"]))
    for job_id in ("quiet", "default", "chatty", "all"):
        source.finish(job_id, progress=2)
    outbox = MemoryOutbox()
    relay = Relay(source, outbox, default_events=DEFAULT_EVENTS, batch=3)

    async def scenario() -> None:
        assert await relay.drain(now=NOW) == 1 + 4 + 6
        assert await relay.drain(now=NOW) == 0
        rows = await everything(outbox)
        by_job: dict[str, list[str]] = {}
        for row in rows:
            by_job.setdefault(row.job_id, []).append(row.type)
        assert by_job == {
            "default": ["job.succeeded"],
            "chatty": ["job.queued", "job.progress", "job.progress", "job.succeeded"],
            "all": [
                "job.queued",
                "job.running",
                "job.started",
                "job.progress",
                "job.progress",
                "job.succeeded",
            ],
        }
        assert len({row.event_seq for row in rows}) == len(rows)
        assert len({row.id for row in rows}) == len(rows)
        assert await outbox.relay_cursor() == source.log[-1].seq

    run(scenario())


def test_the_body_is_the_documented_payload_with_an_injected_view() -> None:
    source = FakeSource()
    source.add("a", hook())
    source.finish("a")
    views: list[str] = []

    def view(job: Any) -> dict[str, Any]:
        views.append(job.id)
        return {"id": job.id, "status": job.status, "from": "the gateway"}

    outbox = MemoryOutbox()
    run(Relay(source, outbox, view=view, default_events=DEFAULT_EVENTS).drain(now=NOW))
    (row,) = run(everything(outbox))
    payload = json.loads(row.body)
    succeeded = source.log[-1]
    assert payload["type"] == row.type == "job.succeeded"
    assert datetime.fromisoformat(payload["timestamp"]).timestamp() == succeeded.at
    assert payload["data"] == {
        "id": "a",
        "status": "succeeded",
        "from": "the gateway",
        "event": {"seq": succeeded.seq, "kind": "status", "data": {"status": "succeeded"}},
    }
    assert views == ["a"]
    assert row.url == "https://hooks.test/in" and row.id.startswith("msg_")


def test_the_default_view_drops_the_workflow_and_a_broken_view_does_not_stop_the_relay() -> None:
    source = FakeSource()
    source.add("a", hook(["queued"]))
    outbox = MemoryOutbox()
    run(Relay(source, outbox, default_events=DEFAULT_EVENTS).drain(now=NOW))

    def broken(job: Any) -> dict[str, Any]:
        raise RuntimeError("view bug")

    source.add("b", hook(["queued"]))
    run(Relay(source, outbox, view=broken, default_events=DEFAULT_EVENTS).drain(now=NOW))
    first, second = (json.loads(r.body)["data"] for r in run(everything(outbox)))
    assert first["id"] == "a" and "workflow" not in first and first["status"] == "queued"
    assert second == {
        "id": "b",
        "event": {"seq": 2, "kind": "status", "data": {"status": "queued"}},
    }


def test_unknown_jobs_and_unusable_webhook_options_are_skipped() -> None:
    source = FakeSource()
    source.add("bad", {"url": "ftp://nope", "events": None})
    source.add("good", hook(["queued"]))
    source.log.append(JobEvent(3, "deleted", "status", {"status": "queued"}, NOW))
    outbox = MemoryOutbox()
    assert run(Relay(source, outbox, default_events=["queued"]).drain(now=NOW)) == 1
    assert [r.job_id for r in run(everything(outbox))] == ["good"]
    assert run(outbox.relay_cursor()) == 3


class CrashingOutbox(MemoryOutbox):
    """Dies once in `relay`: before its transaction, or after it committed."""

    def __init__(self, when: str) -> None:
        super().__init__()
        self.when = when

    async def relay(
        self, after: int, last: int, deliveries: Sequence[NewDelivery], *, now: float
    ) -> bool:
        if self.when == "before":
            self.when = "done"
            raise RuntimeError("crash before commit")
        stored = await super().relay(after, last, deliveries, now=now)
        if self.when == "after":
            self.when = "done"
            raise RuntimeError("crash after commit")
        return stored


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_around_the_relay_transaction_neither_loses_nor_repeats(when: str) -> None:
    source = FakeSource()
    for name in ("a", "b", "c"):
        source.add(name, hook(["*"]))
        source.finish(name, progress=1)
    outbox = CrashingOutbox(when)

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="crash"):
            await Relay(source, outbox, default_events=DEFAULT_EVENTS, batch=4).drain(now=NOW)
        # A new relay (the restarted process) picks up from the stored cursor.
        await Relay(source, outbox, default_events=DEFAULT_EVENTS, batch=4).drain(now=NOW)
        rows = await everything(outbox)
        assert sorted(r.event_seq for r in rows) == [e.seq for e in source.log]

    run(scenario())


def test_two_relays_sharing_an_outbox_store_each_event_once() -> None:
    source = FakeSource()
    for i in range(20):
        source.add(f"job{i}", hook(["*"]))
        source.finish(f"job{i}", progress=2)
    outbox = CountingOutbox()
    relays = [Relay(source, outbox, default_events=DEFAULT_EVENTS, batch=7) for _ in range(2)]

    async def scenario() -> None:
        stored = await asyncio.gather(*(r.drain(now=NOW) for r in relays))
        rows = await everything(outbox)
        assert sum(stored) == len(rows) == len(source.log)
        assert sorted(r.event_seq for r in rows) == [e.seq for e in source.log]
        assert outbox.refused > 0  # they really did race for the same batches

    run(scenario())


class CountingOutbox(MemoryOutbox):
    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def relay(
        self, after: int, last: int, deliveries: Sequence[NewDelivery], *, now: float
    ) -> bool:
        stored = await super().relay(after, last, deliveries, now=now)
        self.refused += not stored
        return stored


def test_the_relay_reads_a_real_job_store() -> None:
    """The job store is an EventSource as it is: options and events_since come from it."""

    async def scenario() -> None:
        store = MemoryJobStore()
        webhook = WebhookOption("https://hooks.test/a", None)
        await store.enqueue(NewJob(id="a", workflow={}, options=JobOptions(webhook=webhook)))
        await store.enqueue(NewJob(id="b", workflow={}))
        for _ in range(2):
            job = await store.claim("w", lease_s=30)
            assert job is not None
            await store.publish(job.id, "progress", {"value": 1})
            await store.complete(job.id, "w", [])
        outbox = MemoryOutbox()
        assert await Relay(store, outbox, default_events=DEFAULT_EVENTS).drain(now=NOW) == 1
        (row,) = await everything(outbox)
        assert (row.job_id, row.type) == ("a", "job.succeeded")
        assert json.loads(row.body)["data"]["status"] == "succeeded"
        await store.close()

    run(scenario())
