"""The job store contract: what the dispatcher and gateway rely on, whatever the backend.

Not collected by itself: each tier imports these tests next to a `store` fixture of its own
(`tests/unit/test_job_store.py`: memory and SQLite; `tests/integration/test_job_store_postgres.py`:
a real PostgreSQL), so every backend passes exactly the same tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from comfyfleet.jobs import (
    LEASE_EXPIRED,
    InvalidCursor,
    Job,
    JobConflict,
    JobNotFound,
    JobOptions,
    JobOutput,
    JobProgress,
    JobStatus,
    JobStore,
    JobStoreError,
    NewJob,
    QueueFull,
    publish_all,
)
from tests.event_loop import run

WORKFLOW = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64}}}
BOOM = {"code": "boom", "message": "it broke", "retryable": True}


def new(job_id: str, **kwargs: Any) -> NewJob:
    return NewJob(id=job_id, workflow=WORKFLOW, **kwargs)


async def fill(store: JobStore, count: int, *, now: float = 1000.0) -> list[str]:
    """Jobs 0..count-1, each queued a second after the one before."""
    ids = [f"job-{i:03d}" for i in range(count)]
    for i, job_id in enumerate(ids):
        await store.enqueue(new(job_id), now=now + i)
    return ids


async def statuses(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    return [event.data for event in await store.events(job_id) if event.kind == "status"]


# --- enqueue ---------------------------------------------------------------------------------


def test_enqueue_creates_a_queued_job_with_a_status_event(store: JobStore) -> None:
    async def scenario() -> None:
        job, created = await store.enqueue(new("a", priority=2, request_hash="h1"), now=5.0)
        assert created
        assert (job.id, job.status, job.priority, job.attempts, job.max_attempts) == (
            "a",
            JobStatus.QUEUED,
            2,
            0,
            3,
        )
        assert job.workflow == WORKFLOW
        assert job.created_at == job.queued_at == 5.0
        assert (job.started_at, job.finished_at, job.worker, job.lease_until) == (None,) * 4
        assert job.outputs == [] and job.error is None and not job.cancel_requested
        assert not job.terminal
        assert await store.get("a") == job
        assert await statuses(store, "a") == [{"status": "queued"}]
        assert json.loads(json.dumps(job.to_dict()))["status"] == "queued"

    run(scenario())


def test_enqueue_is_idempotent_for_the_same_body_and_refuses_another(store: JobStore) -> None:
    async def scenario() -> None:
        first, created = await store.enqueue(new("a", request_hash="h1"))
        again, created_again = await store.enqueue(new("a", request_hash="h1"))
        assert created and not created_again
        assert again == first
        with pytest.raises(JobConflict) as info:
            await store.enqueue(new("a", request_hash="h2"))
        assert "'a'" in str(info.value) and info.value.hint
        assert len(await store.events("a")) == 1
        assert await store.count(JobStatus.QUEUED) == 1

    run(scenario())


def test_queue_full_at_the_limit_but_a_repeat_is_still_answered(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 3)
        with pytest.raises(QueueFull) as info:
            await store.enqueue(new("extra"), max_queued=3)
        assert info.value.limit == 3
        with pytest.raises(JobNotFound):
            await store.get("extra")
        _, created = await store.enqueue(new("job-000"), max_queued=3)
        assert not created
        await store.claim("w", lease_s=30)  # one less waiting: room again
        _, created = await store.enqueue(new("extra"), max_queued=3)
        assert created

    run(scenario())


def test_payloads_are_stored_as_json_and_detached_from_the_caller(store: JobStore) -> None:
    async def scenario() -> None:
        workflow: dict[str, Any] = {"1": {"inputs": {"size": (64, 64)}}}
        job, _ = await store.enqueue(NewJob(id="a", workflow=workflow))
        assert job.workflow == {"1": {"inputs": {"size": [64, 64]}}}
        workflow["1"]["inputs"]["size"] = "changed"
        (await store.get("a")).workflow["1"]["inputs"]["size"] = "changed too"
        assert (await store.get("a")).workflow == {"1": {"inputs": {"size": [64, 64]}}}
        with pytest.raises(TypeError):
            await store.enqueue(NewJob(id="b", workflow={"x": object()}))

    run(scenario())


def test_enqueues_at_once_each_get_their_own_answer(store: JobStore) -> None:
    async def scenario() -> None:
        done = await asyncio.gather(
            store.enqueue(new("a", request_hash="h1")),
            store.enqueue(new("a", request_hash="h1")),
            store.enqueue(new("a", request_hash="h2")),
            store.enqueue(new("b", priority=5)),
            return_exceptions=True,
        )
        first, repeat, conflict, b = done
        assert isinstance(first, tuple) and first[1] is True
        assert repeat == (first[0], False)
        assert isinstance(conflict, JobConflict)
        assert isinstance(b, tuple) and b[1] is True and b[0].priority == 5
        assert await store.get("a") == first[0] and await store.get("b") == b[0]
        assert await statuses(store, "a") == [{"status": "queued"}]
        assert await statuses(store, "b") == [{"status": "queued"}]

    run(scenario())


def test_enqueues_at_once_fill_the_queue_to_its_limit_in_order(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        done = await asyncio.gather(
            *(store.enqueue(new(f"new-{i}"), max_queued=3) for i in range(4)),
            return_exceptions=True,
        )
        assert [d[1] if isinstance(d, tuple) else type(d) for d in done] == [
            True,
            True,
            QueueFull,
            QueueFull,
        ]
        assert await store.count(JobStatus.QUEUED) == 3

    run(scenario())


# --- claim -----------------------------------------------------------------------------------


def test_claim_takes_the_highest_priority_then_the_oldest(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(new("low-old", priority=0), now=1.0)
        await store.enqueue(new("high-new", priority=5), now=3.0)
        await store.enqueue(new("high-old", priority=5), now=2.0)
        await store.enqueue(new("low-new", priority=0), now=4.0)
        await store.enqueue(new("low-same-time", priority=0), now=4.0)
        order = []
        while (job := await store.claim("w", lease_s=30, now=10.0)) is not None:
            order.append(job.id)
        assert order == ["high-old", "high-new", "low-old", "low-new", "low-same-time"]

    run(scenario())


def test_claim_marks_the_job_running_for_the_worker(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        job = await store.claim("w1", lease_s=30, now=2000.0)
        assert job is not None
        assert (job.status, job.attempts, job.worker) == (JobStatus.RUNNING, 1, "w1")
        assert (job.started_at, job.lease_until) == (2000.0, 2030.0)
        assert await store.get(job.id) == job
        assert await statuses(store, job.id) == [
            {"status": "queued"},
            {"status": "running", "attempt": 1},
        ]
        assert await store.claim("w1", lease_s=30) is None

    run(scenario())


def test_racing_claimers_never_get_the_same_job(store: JobStore) -> None:
    async def scenario() -> None:
        ids = await fill(store, 10)
        claims = await asyncio.gather(*(store.claim(f"w{i}", lease_s=30) for i in range(20)))
        got = [job.id for job in claims if job is not None]
        assert sorted(got) == ids
        assert await store.count(JobStatus.RUNNING) == 10

    run(scenario())


# --- owning a job ----------------------------------------------------------------------------


def test_only_the_owner_completes_and_a_stranger_changes_nothing(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        job = await store.claim("owner", lease_s=30)
        assert job is not None
        outputs = [JobOutput(node_id="9", filename="a.png", others={"extra": [1]})]
        assert await store.complete(job.id, "stranger", outputs) is None
        assert await store.fail(job.id, "stranger", BOOM, retryable=False) is None
        assert await store.mark_cancelled(job.id, "stranger") is None
        assert await store.set_running_info(job.id, "stranger", instance=3) is False
        assert await store.get(job.id) == job
        done = await store.complete(job.id, "owner", outputs, now=3000.0)
        assert done is not None and done.terminal
        assert (done.status, done.outputs, done.finished_at) == (
            JobStatus.SUCCEEDED,
            outputs,
            3000.0,
        )
        assert done.worker is None and done.lease_until is None
        assert await store.get(job.id) == done
        assert (await statuses(store, job.id))[-1] == {"status": "succeeded"}
        # Delivered once: a second complete (a worker that retries) is refused.
        assert await store.complete(job.id, "owner", outputs) is None
        assert await store.complete("nope", "owner", outputs) is None

    run(scenario())


def test_ends_at_once_each_apply_to_their_own_job(store: JobStore) -> None:
    async def scenario() -> None:
        ids = await fill(store, 4)
        for _ in ids:
            await store.claim("w", lease_s=30)
        outputs = [JobOutput.from_json({"node": "9", "filename": "a.png"})]
        done = await asyncio.gather(
            store.complete(ids[0], "w", outputs),
            store.complete(ids[0], "w", outputs),  # delivered twice: the second is refused
            store.fail(ids[1], "w", BOOM, retryable=False),
            store.mark_cancelled(ids[2], "w"),
            store.cancel(ids[3]),
            store.complete(ids[3], "stranger", outputs),
        )
        first, again, failed, cancelled, asked, stranger = done
        assert first is not None and first.status == JobStatus.SUCCEEDED
        assert first.outputs == outputs and again is None and stranger is None
        assert failed is not None and failed.status == JobStatus.FAILED
        assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
        assert asked.status == JobStatus.RUNNING and asked.cancel_requested
        for job_id, job in zip(ids, [first, failed, cancelled, asked], strict=True):
            assert await store.get(job_id) == job
        assert (await statuses(store, ids[0]))[-1] == {"status": "succeeded"}
        assert len(await statuses(store, ids[0])) == 3

    run(scenario())


def test_set_running_info_updates_only_what_is_given(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        job = await store.claim("w", lease_s=30)
        assert job is not None
        assert await store.set_running_info(job.id, "w", instance=2, prompt_id="p1")
        progress = JobProgress.of("4", 3, 10)
        assert await store.set_running_info(job.id, "w", progress=progress)
        stored = await store.get(job.id)
        assert (stored.instance, stored.prompt_id, stored.progress) == (2, "p1", progress)
        assert not await store.set_running_info("nope", "w", instance=1)

    run(scenario())


def test_a_retryable_failure_requeues_until_attempts_run_out(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(new("a", max_attempts=2), now=1.0)
        job = await store.claim("w", lease_s=30, now=2.0)
        assert job is not None
        await store.set_running_info(
            "a", "w", instance=1, prompt_id="p", progress=JobProgress.of(None, 1, 1)
        )
        retried = await store.fail("a", "w", BOOM, retryable=True, now=3.0)
        assert retried is not None
        assert (retried.status, retried.attempts, retried.queued_at, retried.error) == (
            JobStatus.QUEUED,
            1,
            3.0,
            BOOM,
        )
        assert retried.worker is None and retried.lease_until is None
        assert (await statuses(store, "a"))[-1] == {
            "status": "queued",
            "retry": True,
            "error": BOOM,
        }
        again = await store.claim("w2", lease_s=30, now=4.0)
        assert again is not None and again.attempts == 2
        assert again.instance is None and again.prompt_id is None and again.progress is None
        final = await store.fail("a", "w2", BOOM, retryable=True, now=5.0)
        assert final is not None
        assert (final.status, final.error, final.finished_at) == (JobStatus.FAILED, BOOM, 5.0)
        assert (await statuses(store, "a"))[-1] == {"status": "failed", "error": BOOM}

    run(scenario())


def test_a_final_failure_fails_at_once(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        job = await store.claim("w", lease_s=30)
        assert job is not None
        failed = await store.fail(job.id, "w", {"code": "bad_graph"}, retryable=False)
        assert failed is not None
        assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)

    run(scenario())


# --- cancelling ------------------------------------------------------------------------------


def test_cancel_a_queued_job_cancels_it_at_once(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        job = await store.cancel("job-000", now=7.0)
        assert (job.status, job.finished_at) == (JobStatus.CANCELLED, 7.0)
        assert await store.claim("w", lease_s=30) is None
        assert (await statuses(store, job.id))[-1] == {"status": "cancelled"}
        with pytest.raises(JobNotFound) as info:
            await store.cancel("nope")
        assert str(info.value) == "no job 'nope'"

    run(scenario())


def test_cancel_a_running_job_asks_its_worker(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        await store.claim("w", lease_s=30)
        job = await store.cancel("job-000")
        assert (job.status, job.cancel_requested) == (JobStatus.RUNNING, True)
        assert (await store.events(job.id))[-1].kind == "cancel_requested"
        assert await store.cancel("job-000") == job  # asked already: no second event
        assert len(await store.events(job.id)) == 3
        done = await store.mark_cancelled(job.id, "w", now=9.0)
        assert done is not None
        assert (done.status, done.finished_at, done.worker) == (JobStatus.CANCELLED, 9.0, None)
        assert (await statuses(store, job.id))[-1] == {"status": "cancelled"}

    run(scenario())


def test_a_job_that_succeeds_on_a_later_attempt_reports_no_error(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(new("a", max_attempts=2), now=1.0)
        assert await store.claim("w", lease_s=30, now=2.0) is not None
        await store.fail("a", "w", BOOM, retryable=True, now=3.0)
        assert await store.claim("w2", lease_s=30, now=4.0) is not None
        done = await store.complete("a", "w2", [], now=5.0)
        assert done is not None
        assert (done.status, done.attempts, done.error) == (JobStatus.SUCCEEDED, 2, None)
        assert (await store.get("a")).error is None
        assert {"status": "queued", "retry": True, "error": BOOM} in await statuses(store, "a")

    run(scenario())


def test_a_cancel_requested_job_that_fails_is_cancelled_not_retried(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        await store.claim("w", lease_s=30)
        await store.cancel("job-000")
        job = await store.fail("job-000", "w", BOOM, retryable=True)
        assert job is not None and job.status is JobStatus.CANCELLED

    run(scenario())


def test_cancel_leaves_a_finished_job_as_it_is(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        await store.claim("w", lease_s=30)
        done = await store.complete("job-000", "w", [])
        assert done is not None
        events = await store.events("job-000")
        assert await store.cancel("job-000") == done
        assert await store.events("job-000") == events

    run(scenario())


# --- leases ----------------------------------------------------------------------------------


def test_heartbeat_extends_only_the_leases_the_worker_holds(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 3)
        mine = await store.claim("me", lease_s=10, now=2000.0)
        theirs = await store.claim("them", lease_s=10, now=2000.0)
        assert mine is not None and theirs is not None
        ids = [mine.id, theirs.id, "job-002", "nope"]
        assert await store.heartbeat("me", ids, lease_s=10, now=2005.0) == [mine.id]
        assert (await store.get(mine.id)).lease_until == 2015.0
        assert (await store.get(theirs.id)).lease_until == 2010.0
        assert (await store.get("job-002")).lease_until is None

    run(scenario())


def test_release_expired_requeues_lapsed_leases(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 3)
        lapsed = await store.claim("dead", lease_s=10, now=2000.0)
        alive = await store.claim("alive", lease_s=100, now=2000.0)
        assert lapsed is not None and alive is not None
        assert await store.release_expired(now=2010.0) == []  # lease_until is not < now yet
        assert await store.release_expired(now=2011.0) == [lapsed.id]
        job = await store.get(lapsed.id)
        assert (job.status, job.attempts, job.error, job.worker) == (
            JobStatus.QUEUED,
            1,
            LEASE_EXPIRED,
            None,
        )
        assert (await statuses(store, job.id))[-1] == {
            "status": "queued",
            "retry": True,
            "error": LEASE_EXPIRED,
        }
        assert (await store.get(alive.id)).status is JobStatus.RUNNING
        # The dead worker comes back: too late, it can no longer deliver.
        assert await store.complete(lapsed.id, "dead", []) is None

    run(scenario())


def test_a_late_end_of_an_earlier_attempt_by_the_same_worker_is_refused(store: JobStore) -> None:
    """The worker's lease lapsed, the job went back, and the same worker claimed it again (an
    agent whose link came back): what the first attempt reports now changes nothing."""

    async def scenario() -> None:
        await fill(store, 1)
        first = await store.claim("agent", lease_s=10, now=3000.0)
        assert first is not None
        assert await store.release_expired(now=3011.0) == [first.id]
        second = await store.claim("agent", lease_s=10, now=3012.0)
        assert second is not None and second.id == first.id and second.attempts == 2
        old = {"code": "instance_lost", "message": "late", "retryable": True}
        late = [JobOutput(node_id="9", filename="late.png")]
        assert await store.fail(first.id, "agent", old, retryable=True, attempt=1) is None
        assert await store.complete(first.id, "agent", late, attempt=1) is None
        assert (await store.get(first.id)).status is JobStatus.RUNNING
        done = await store.complete(first.id, "agent", [], attempt=2)
        assert done is not None and done.status is JobStatus.SUCCEEDED and done.outputs == []

    run(scenario())


def test_release_expired_fails_exhausted_jobs_and_cancels_cancelled_ones(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(new("once", max_attempts=1), now=1.0)
        await store.enqueue(new("cancelled"), now=2.0)
        await store.claim("dead", lease_s=10, now=100.0)
        await store.claim("dead", lease_s=10, now=100.0)
        await store.cancel("cancelled")
        released = await store.release_expired(now=200.0)
        assert sorted(released) == ["cancelled", "once"]
        once = await store.get("once")
        assert (once.status, once.error) == (JobStatus.FAILED, LEASE_EXPIRED)
        assert (await store.get("cancelled")).status is JobStatus.CANCELLED
        assert await store.release_expired(now=300.0) == []

    run(scenario())


# --- listing ---------------------------------------------------------------------------------


def test_list_jobs_pages_newest_first(store: JobStore) -> None:
    async def scenario() -> None:
        ids = await fill(store, 7)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            jobs, cursor = await store.list_jobs(limit=3, cursor=cursor)
            seen += [job.id for job in jobs]
            pages += 1
            if cursor is None:
                break
        assert seen == ids[::-1]
        assert pages == 3
        jobs, cursor = await store.list_jobs(limit=7)
        assert len(jobs) == 7 and cursor is None  # no empty last page
        with pytest.raises(InvalidCursor):
            await store.list_jobs(cursor="seven")
        with pytest.raises(JobStoreError):
            await store.list_jobs(cursor="-1")

    run(scenario())


def test_list_jobs_filters_by_status(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 5)
        for _ in range(3):
            await store.claim("w", lease_s=30)
        running, cursor = await store.list_jobs(status=JobStatus.RUNNING, limit=2)
        assert [job.id for job in running] == ["job-002", "job-001"]
        rest, end = await store.list_jobs(status=JobStatus.RUNNING, limit=2, cursor=cursor)
        assert [job.id for job in rest] == ["job-000"] and end is None
        queued, _ = await store.list_jobs(status=JobStatus.QUEUED)
        assert [job.id for job in queued] == ["job-004", "job-003"]
        assert await store.list_jobs(status=JobStatus.FAILED) == ([], None)
        assert await store.count(JobStatus.RUNNING) == 3
        assert await store.count(JobStatus.QUEUED) == 2
        assert await store.count(JobStatus.SUCCEEDED) == 0

    run(scenario())


def test_queue_position_follows_claim_order(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 3)
        await store.enqueue(new("urgent", priority=9), now=5000.0)
        positions = [await store.queue_position(i) for i in ("urgent", "job-000", "job-002")]
        assert positions == [0, 1, 3]
        await store.claim("w", lease_s=30)
        assert await store.queue_position("urgent") is None
        assert await store.queue_position("job-000") == 0
        with pytest.raises(JobNotFound):
            await store.queue_position("nope")

    run(scenario())


# --- owners ----------------------------------------------------------------------------------


def test_a_job_keeps_the_key_that_submitted_it(store: JobStore) -> None:
    async def scenario() -> None:
        job, _ = await store.enqueue(new("a", owner="key-a"))
        assert job.owner == "key-a"
        assert (await store.get("a")).owner == "key-a"
        anonymous, _ = await store.enqueue(new("b"))
        assert anonymous.owner is None

    run(scenario())


def test_listing_by_owner_shows_only_that_owners_jobs_page_by_page(store: JobStore) -> None:
    async def scenario() -> None:
        for i in range(7):
            owner = ("key-a", "key-b", None)[i % 3]
            await store.enqueue(new(f"job-{i}", owner=owner), now=1000.0 + i)
        await store.claim("w", lease_s=30)  # job-0 (key-a) runs
        jobs, cursor = await store.list_jobs(owner="key-a", limit=2)
        assert [j.id for j in jobs] == ["job-6", "job-3"] and cursor is not None
        jobs, cursor = await store.list_jobs(owner="key-a", limit=2, cursor=cursor)
        assert [j.id for j in jobs] == ["job-0"] and cursor is None
        queued, _ = await store.list_jobs(owner="key-a", status=JobStatus.QUEUED)
        assert [j.id for j in queued] == ["job-6", "job-3"]
        assert [j.id for j in (await store.list_jobs(owner="key-b"))[0]] == ["job-4", "job-1"]
        assert (await store.list_jobs(owner="key-c"))[0] == []
        everyone, _ = await store.list_jobs()
        assert [j.id for j in everyone] == [f"job-{i}" for i in reversed(range(7))]

    run(scenario())


def test_an_id_taken_by_another_owner_is_a_conflict_never_their_job(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(new("shared", owner="key-a", request_hash="h"))
        for stranger in ("key-b", None):
            with pytest.raises(JobConflict) as info:
                await store.enqueue(new("shared", owner=stranger, request_hash="h"))
            assert info.value.message == "job 'shared' already exists with a different request"
        assert (await store.get("shared")).owner == "key-a"
        _, created = await store.enqueue(new("shared", owner="key-a", request_hash="h"))
        assert not created  # the owner's own retry is still a retry
        assert len(await store.events("shared")) == 1

    run(scenario())


# --- events ----------------------------------------------------------------------------------


def test_events_come_in_order_and_after_a_seq(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 2)
        first = await store.publish("job-000", "progress", {"value": 1}, now=1.5)
        await store.publish("job-001", "progress", {"value": 9})
        second = await store.publish("job-000", "progress", {"value": 2})
        assert (first.job_id, first.kind, first.data, first.at) == (
            "job-000",
            "progress",
            {"value": 1},
            1.5,
        )
        events = await store.events("job-000")
        assert [event.seq for event in events] == sorted(event.seq for event in events)
        assert [event.data for event in events] == [
            {"status": "queued"},
            {"value": 1},
            {"value": 2},
        ]
        assert await store.events("job-000", after=first.seq) == [second]
        assert await store.events("job-000", after=second.seq) == []
        assert len(await store.events("job-000", limit=2)) == 2
        assert second.to_dict()["data"] == {"value": 2}
        with pytest.raises(JobNotFound):
            await store.publish("nope", "progress", {})
        with pytest.raises(JobNotFound):
            await store.events("nope")

    run(scenario())


def test_wait_events_wakes_up_on_publish(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 2)
        (latest,) = await store.events("job-000")
        waiter = asyncio.create_task(store.wait_events("job-000", after=latest.seq, timeout=5))
        other = asyncio.create_task(store.wait_events("job-000", after=latest.seq, timeout=5))
        await asyncio.sleep(0.02)
        assert not waiter.done()
        await store.publish("job-001", "progress", {})  # another job's event wakes nobody here
        await asyncio.sleep(0.02)
        assert not waiter.done()
        started = time.monotonic()
        await store.claim("w", lease_s=30)  # a status event is an event too
        got = await asyncio.wait_for(waiter, 1)
        assert time.monotonic() - started < 0.5
        assert [event.data["status"] for event in got] == ["running"]
        assert await other == got

    run(scenario())


def test_wait_events_since_wakes_on_any_jobs_event(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 2)
        newest = (await store.events_since(0))[-1].seq
        assert await store.latest_event_seq() == newest
        assert len(await store.wait_events_since(0, timeout=5)) == 2  # at once: two enqueued
        waiter = asyncio.create_task(store.wait_events_since(newest, timeout=5))
        await asyncio.sleep(0.02)
        assert not waiter.done()
        await store.publish("job-001", "progress", {"value": 1})
        got = await asyncio.wait_for(waiter, 1)
        assert [(e.job_id, e.kind) for e in got] == [("job-001", "progress")]
        assert await store.wait_events_since(got[-1].seq, timeout=0.05) == []

    run(scenario())


def test_forget_removes_finished_jobs_and_their_events_only(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 3)
        claimed = await store.claim("w", lease_s=30)
        assert claimed is not None
        done = await store.cancel("job-001")  # queued: cancelled at once
        assert done.status == JobStatus.CANCELLED
        assert await store.forget(["job-001", claimed.id, "job-002", "nope"]) == 1
        with pytest.raises(JobNotFound):
            await store.get("job-001")
        assert [e for e in await store.events_since(0) if e.job_id == "job-001"] == []
        assert (await store.get(claimed.id)).status == JobStatus.RUNNING
        assert (await store.get("job-002")).status == JobStatus.QUEUED

    run(scenario())


def test_wait_events_returns_at_once_or_empty_after_the_timeout(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        started = time.monotonic()
        assert len(await store.wait_events("job-000", after=0, timeout=5)) == 1
        assert time.monotonic() - started < 0.5
        (latest,) = await store.events("job-000")
        started = time.monotonic()
        assert await store.wait_events("job-000", after=latest.seq, timeout=0.05) == []
        assert 0.04 < time.monotonic() - started < 1
        with pytest.raises(JobNotFound):
            await store.wait_events("nope", after=0, timeout=0.01)

    run(scenario())


def test_wait_end_reads_the_job_on_its_status_events_only(store: JobStore) -> None:
    """A synchronous submit waits here while the job reports progress: only a status event
    (on PostgreSQL, its notification from whichever process wrote it) makes it read again."""

    async def scenario() -> None:
        await fill(store, 2)
        claimed = await store.claim("w", lease_s=30)
        assert claimed is not None
        reads: list[str] = []
        real_get = store.get

        async def counted(job_id: str) -> Job:
            reads.append(job_id)
            return await real_get(job_id)

        store.get = counted  # type: ignore[method-assign]
        waiter = asyncio.create_task(store.wait_end(claimed.id, timeout=5))
        await asyncio.sleep(0.05)
        assert not waiter.done() and reads == [claimed.id]
        for n in range(5):
            await store.publish(claimed.id, "progress", {"value": n})
        await store.publish("job-001", "status", {"status": "note"})  # another job's status
        await asyncio.sleep(0.1)
        assert not waiter.done() and reads == [claimed.id]
        await store.complete(claimed.id, "w", [])
        ended = await asyncio.wait_for(waiter, 2)
        assert ended.status == JobStatus.SUCCEEDED and reads == [claimed.id] * 2
        started = time.monotonic()
        assert (await store.wait_end(claimed.id, timeout=5)).status == JobStatus.SUCCEEDED
        assert time.monotonic() - started < 0.5  # ended already: at once
        assert (await store.wait_end("job-001", timeout=0.05)).status == JobStatus.QUEUED
        with pytest.raises(JobNotFound):
            await store.wait_end("nope", timeout=0.01)

    run(scenario())


def test_close_wakes_waiters_and_refuses_calls(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 1)
        waiter = asyncio.create_task(store.wait_events("job-000", after=99, timeout=5))
        await asyncio.sleep(0.01)
        await store.close()
        assert await asyncio.wait_for(waiter, 1) == []
        with pytest.raises(JobStoreError, match="closed"):
            await store.get("job-000")
        await store.close()  # twice is fine

    run(scenario())


def test_options_travel_with_the_job(store: JobStore) -> None:
    options = {"webhook": {"url": "https://example.com/hook", "events": None}, "timeout_s": 30}

    async def go() -> tuple[Job, Job]:
        stored, _ = await store.enqueue(new("opt", options=JobOptions.from_json(options)))
        claimed = await store.claim("w", lease_s=10)
        assert claimed is not None
        return stored, claimed

    stored, claimed = run(go())
    assert stored.options.to_json() == options == claimed.options.to_json()
    assert run(store.get("opt")).options.to_json() == options


def test_a_claim_records_where_the_job_runs_in_the_same_write(store: JobStore) -> None:
    async def go() -> Job:
        await store.enqueue(new("where"))
        job = await store.claim("w", lease_s=10, instance=1, prompt_id="p-1")
        assert job is not None and (job.instance, job.prompt_id) == (1, "p-1")
        return await store.get("where")

    job = run(go())
    assert (job.instance, job.prompt_id) == (1, "p-1")
    running = run(store.events("where"))[-1]
    assert running.data == {"status": "running", "attempt": 1, "instance": 1}


def test_completion_details_go_into_the_succeeded_event(store: JobStore) -> None:
    async def go() -> list[Any]:
        await store.enqueue(new("done"))
        await store.claim("w", lease_s=10)
        await store.complete("done", "w", [], details={"comfy_ts": 123, "status": "forged"})
        return await store.events("done")

    last = run(go())[-1]
    assert last.data == {"comfy_ts": 123, "status": "succeeded"}


def test_events_since_is_every_jobs_feed_in_order(store: JobStore) -> None:
    async def go() -> tuple[list[Any], list[Any]]:
        await store.enqueue(new("a"))
        await store.enqueue(new("b"))
        await store.publish("a", "note", {"n": 1})
        everything = await store.events_since(0)
        rest = await store.events_since(everything[0].seq, limit=1)
        return everything, rest

    everything, rest = run(go())
    assert [(e.job_id, e.kind) for e in everything] == [
        ("a", "status"),
        ("b", "status"),
        ("a", "note"),
    ]
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    assert rest == everything[1:2]


def test_publish_all_stores_a_batch_in_order_and_wakes_its_waiters(store: JobStore) -> None:
    async def scenario() -> None:
        await fill(store, 2)
        newest = await store.latest_event_seq()
        waiter = asyncio.create_task(store.wait_events("job-001", after=newest, timeout=5))
        await asyncio.sleep(0.02)
        batch = [
            ("job-000", "started", {"instance": 0}),
            ("job-001", "executing", {"node": "2"}),
            ("job-000", "executed", {"node": "3", "output": {"images": []}}),
        ]
        published = await publish_all(store, batch, now=7.0)
        assert [(e.job_id, e.kind, e.data, e.at) for e in published] == [
            (*each, 7.0) for each in batch
        ]
        assert [e.seq for e in published] == sorted(e.seq for e in published)
        assert await store.events_since(newest) == published
        assert [e.kind for e in await asyncio.wait_for(waiter, 1)] == ["executing"]
        assert await publish_all(store, []) == []
        with pytest.raises(JobNotFound):
            await publish_all(store, [("nobody", "note", {})])

    run(scenario())


def test_publishing_for_an_unknown_job_is_refused(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        run(store.publish("nobody", "note", {}))


def test_a_queued_job_can_be_failed_for_a_timeout_once_only(store: JobStore) -> None:
    error = {"code": "timeout", "message": "waited too long", "retryable": False}

    async def go() -> tuple[Job | None, Job | None, Job | None]:
        await store.enqueue(new("slow"))
        await store.enqueue(new("taken"))
        first = await store.fail_queued("slow", error)
        again = await store.fail_queued("slow", error)
        claimed = await store.claim("w", lease_s=10)
        assert claimed is not None and claimed.id == "taken"
        running = await store.fail_queued("taken", error)
        return first, again, running

    first, again, running = run(go())
    assert first is not None and first.status is JobStatus.FAILED and first.error == error
    assert again is None and running is None
    assert run(store.get("taken")).status is JobStatus.RUNNING


def test_a_cursor_too_big_for_a_row_id_is_invalid(store: JobStore) -> None:
    with pytest.raises(InvalidCursor):
        run(store.list_jobs(cursor="9" * 20))


# --- retention -------------------------------------------------------------------------------


def _stored_size(*values: Any) -> int:
    """The UTF-8 size of compact JSON, as every backend stores it."""
    return sum(
        len(json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode())
        for v in values
        if v is not None
    )


async def _ended(store: JobStore) -> dict[str, Job]:
    """a: succeeded at 100 (outputs, a progress event); b: failed at 50; c: cancelled at 200
    while queued; d: queued; e: running. Names with non-ASCII text, so bytes are not characters."""
    graph = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "un café à Zürich"}}}
    for i, job_id in enumerate("abcde"):
        await store.enqueue(
            NewJob(id=job_id, workflow=graph, options=JobOptions.from_json({"n": i})), now=10.0 + i
        )
    a = await store.claim("w", lease_s=1e6, now=20.0)
    b = await store.claim("w", lease_s=1e6, now=21.0)
    assert a is not None and b is not None and (a.id, b.id) == ("a", "b")
    await store.publish("a", "progress", {"value": 1, "max": 2, "node": "é"}, now=30.0)
    await store.complete("a", "w", [JobOutput(filename="a.png", path="a.png")], now=100.0)
    await store.fail("b", "w", BOOM, retryable=False, now=50.0)
    await store.cancel("c", now=200.0)
    assert (await store.claim("w", lease_s=1e6, now=22.0) or new("x")).id == "d"
    await store.fail_queued("e", BOOM, now=23.0)  # e is finished too (in the queue), ...
    await store.enqueue(NewJob(id="f", workflow=graph), now=24.0)  # ... f is queued
    return {job_id: await store.get(job_id) for job_id in "abcdf"}


def test_finished_jobs_are_listed_by_end_with_what_they_hold(store: JobStore) -> None:
    async def scenario() -> None:
        await _ended(store)
        found = await store.finished_jobs(150.0)
        assert [(f.id, f.status, f.finished_at) for f in found] == [
            ("e", JobStatus.FAILED, 23.0),
            ("b", JobStatus.FAILED, 50.0),
            ("a", JobStatus.SUCCEEDED, 100.0),
        ]
        for item in found:
            job, events = await store.get(item.id), await store.events(item.id)
            assert item.seq == job.seq
            assert item.events == len(events) and item.last_event == events[-1].seq
            outputs = [o.to_json() for o in job.outputs]
            progress = None if job.progress is None else job.progress.to_json()
            stored = (job.workflow, job.options.to_json(), outputs, job.error, progress)
            assert item.bytes == _stored_size(*stored)
            assert item.event_bytes == _stored_size(*(e.data for e in events))
        assert (found[2].events, found[1].events) == (4, 3)  # queued, running, progress, done
        # Page by page, after the cursor of the last one seen; c ended at 200, at the limit.
        pages, after = [], None
        while page := await store.finished_jobs(200.0, after=after, limit=2):
            pages.append([f.id for f in page])
            after = page[-1].cursor
        assert pages == [["e", "b"], ["a"]]
        assert [f.id for f in await store.finished_jobs(200.5)] == ["e", "b", "a", "c"]
        assert await store.finished_jobs(23.0) == []

    run(scenario())


def test_queue_depths_count_the_waiting_jobs_by_priority(store: JobStore) -> None:
    async def scenario() -> None:
        assert await store.queue_depths() == {}
        for job_id, priority in (("a", 0), ("b", 0), ("c", 5), ("d", -1), ("e", 5)):
            await store.enqueue(new(job_id, priority=priority), now=1.0)
        await store.claim("w", lease_s=30, now=2.0)  # takes a priority-5 job: no longer waiting
        await store.cancel("d", now=3.0)
        assert await store.queue_depths() == {0: 2, 5: 1}

    run(scenario())


def test_live_jobs_are_the_queued_and_running_ones_by_seq(store: JobStore) -> None:
    async def scenario() -> None:
        jobs = await _ended(store)
        live = await store.live_jobs()
        assert [(j.id, j.status) for j in live] == [
            ("d", JobStatus.RUNNING),
            ("f", JobStatus.QUEUED),
        ]
        assert live == [jobs["d"], jobs["f"]]
        first = await store.live_jobs(limit=1)
        assert [j.id for j in first] == ["d"]
        assert [j.id for j in await store.live_jobs(after=first[0].seq)] == ["f"]
        assert await store.live_jobs(after=jobs["f"].seq) == []
        # Put back in the queue, a job keeps its seq: paging still finds it once.
        await store.fail("d", "w", BOOM, retryable=True, now=300.0)
        assert [(j.id, j.status) for j in await store.live_jobs()] == [
            ("d", JobStatus.QUEUED),
            ("f", JobStatus.QUEUED),
        ]

    run(scenario())


def test_a_forgotten_job_leaves_no_trace_in_its_owners_listing(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(new("a", owner="key-a"), now=1.0)
        await store.enqueue(new("b", owner="key-a"), now=2.0)
        await store.cancel("a", now=3.0)
        assert await store.forget(["a"]) == 1
        jobs, cursor = await store.list_jobs(owner="key-a")
        assert [j.id for j in jobs] == ["b"] and cursor is None
        assert await store.finished_jobs(1e9) == []

    run(scenario())


def test_endings_are_the_jobs_finished_since_newest_first(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(new("ok"), now=100.0)
        await store.enqueue(new("bad"), now=101.0)
        await store.enqueue(new("gone"), now=102.0)
        await store.enqueue(new("early"), now=50.0)
        await store.enqueue(new("waiting"), now=103.0)
        for job_id, at in (("early", 55.0), ("ok", 110.0), ("bad", 111.0)):
            job = await store.claim("w", lease_s=30, now=at)
            assert job is not None and job.id == job_id
        await store.complete("early", "w", [], now=60.0)
        await store.complete("ok", "w", [], now=120.0)
        await store.fail("bad", "w", BOOM | {"retryable": False}, retryable=False, now=115.0)
        await store.cancel("gone", now=130.0)
        ended = await store.endings(since=100.0)
        assert [(e.status, e.finished_at) for e in ended] == [
            (JobStatus.CANCELLED, 130.0),
            (JobStatus.SUCCEEDED, 120.0),
            (JobStatus.FAILED, 115.0),
        ]
        cancelled, succeeded, _ = ended
        assert (succeeded.created_at, succeeded.started_at) == (100.0, 110.0)
        assert (succeeded.total_s, succeeded.running_s) == (20.0, 10.0)
        assert (cancelled.started_at, cancelled.running_s, cancelled.total_s) == (None, None, 28.0)
        assert [e.finished_at for e in await store.endings(since=0.0, limit=2)] == [130.0, 120.0]

    run(scenario())
