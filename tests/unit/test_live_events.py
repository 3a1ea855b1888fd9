"""What a client watching a job sees: the translation of store events, the preview fan-out (a slow
watcher loses old frames, nobody waits), and `JobFeed` over a real in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from comfyfleet.gateway._live import ClientEvent, JobFeed, translate
from comfyfleet.gateway._previews import PreviewError, PreviewHub
from comfyfleet.gateway._views import job_view
from comfyfleet.jobs import JobEvent, JobOutput, JobStore, MemoryJobStore, NewJob, SqliteJobStore

T = TypeVar("T")
WORKER = "agent-1"
GRAPH = {"1": {"class_type": "SaveImage", "inputs": {}}}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def outputs_of(job_id: str) -> list[JobOutput]:
    return [
        JobOutput(
            node_id="9",
            kind="images",
            filename="cat_00001_.png",
            subfolder=job_id,
            type="output",
            path="cat_00001_.png",
            url=f"/v1/outputs/{job_id}/cat_00001_.png",
        ),
        JobOutput(node_id="12", kind="text", text="a cat"),
    ]


async def run_to_success(store: JobStore, job_id: str) -> None:
    """The events the dispatcher writes for one successful run, through the store's API."""
    await store.enqueue(NewJob(id=job_id, workflow=GRAPH))
    claimed = await store.claim(WORKER, lease_s=60, instance=0, prompt_id="p1")
    assert claimed is not None and claimed.id == job_id
    await store.publish(job_id, "started", {"instance": 0, "comfy_ts": 17})
    await store.publish(job_id, "executing", {"node": "3"})
    await store.publish(job_id, "progress", {"node": "3", "value": 5, "max": 20, "fraction": 0.25})
    await store.publish(job_id, "executed", {"node": "9", "output": {"images": [{"x": 1}]}})
    await store.complete(job_id, WORKER, outputs_of(job_id), details={"instance": 0})


def event(kind: str, data: dict[str, Any], seq: int = 7) -> JobEvent:
    return JobEvent(seq=seq, job_id="j1", kind=kind, data=data, at=0.0)


# --- translation ------------------------------------------------------------------------------


def test_a_successful_run_reads_as_status_progress_outputs_then_the_final_status() -> None:
    async def scenario() -> list[ClientEvent]:
        store = MemoryJobStore()
        await run_to_success(store, "j1")
        view = job_view(await store.get("j1"))
        return [e for ev in await store.events("j1") for e in translate(ev, view)]

    events = run(scenario())
    names = [e.event for e in events]
    assert names == [
        "status", "status", "started", "executing", "progress", "executed",
        "output", "output", "status",
    ]  # fmt: skip
    assert all(e.job_id == "j1" for e in events)
    assert events[0].data == {"status": "queued"}
    assert events[1].data == {"status": "running", "attempt": 1, "instance": 0}
    assert events[2].data == {"instance": 0, "comfy_ts": 17}
    assert events[3].data == {"node": "3"}
    assert events[4].data == {"node": "3", "step": 5, "steps": 20, "value": 0.25}
    assert events[5].data == {"node": "9"}  # the raw ComfyUI output is not a client's business
    image, text, final = events[6:]
    assert image.data["url"] == "/v1/outputs/j1/cat_00001_.png"
    assert image.data["kind"] == "images" and image.data["filename"] == "cat_00001_.png"
    assert (image.data["index"], image.data["count"]) == (0, 2)
    assert text.data["text"] == "a cat" and text.data["index"] == 1
    assert final.data == {"status": "succeeded", "attempt": 1, "instance": 0}
    assert final.final and not image.final
    # The group shares its store seq; only the final status closes it.
    assert image.seq == text.seq == final.seq
    assert [e.ends_group for e in events[6:]] == [False, False, True]
    seqs = [e.seq or 0 for e in events[:6]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6 and all(e.ends_group for e in events[:6])


def test_a_failure_sends_the_error_then_the_status_and_a_retry_is_not_final() -> None:
    error = {"code": "node_error", "message": "node 6 (KSampler): boom", "node_id": "6"}
    retry = translate(event("status", {"status": "queued", "retry": True, "error": error}))
    assert [e.event for e in retry] == ["status"] and not retry[0].final
    assert retry[0].data == {"status": "queued", "retry": True, "error": error}

    failed = translate(event("status", {"status": "failed", "error": error}), {"attempts": 2})
    assert [(e.event, e.ends_group) for e in failed] == [("error", False), ("status", True)]
    assert failed[0].data == error
    assert failed[1].data == {"status": "failed", "attempt": 2, "error": error}
    assert failed[1].final and failed[0].seq == failed[1].seq == 7

    cancelled = translate(event("status", {"status": "cancelled"}))
    assert [e.event for e in cancelled] == ["status"] and cancelled[0].final


def test_progress_is_normalised_and_unknown_kinds_pass_through() -> None:
    (half,) = translate(event("progress", {"node": "3", "value": 3, "max": 6}))
    assert half.data == {"node": "3", "step": 3, "steps": 6, "value": 0.5}
    (odd,) = translate(event("progress", {"node": "3", "value": 9, "max": 0}))
    assert odd.data["value"] == 0.0 and odd.data["steps"] == 0
    (over,) = translate(event("progress", {"value": 4, "max": 2, "fraction": 2.0}))
    assert over.data["value"] == 1.0

    downloading = {"model": "sd15.safetensors", "done": 10, "total": 100}
    (passed,) = translate(event("downloading", downloading))
    assert passed.to_dict() == {
        "job_id": "j1",
        "seq": 7,
        "event": "downloading",
        "data": downloading,
    }
    (cancel,) = translate(event("cancel_requested", {}))
    assert cancel.event == "cancel_requested" and cancel.data == {}


def test_without_a_view_a_final_status_lists_no_outputs() -> None:
    events = translate(event("status", {"status": "succeeded"}))
    assert [e.event for e in events] == ["status"]


# --- previews ---------------------------------------------------------------------------------


def test_preview_frames_reach_every_subscriber_of_their_job_only() -> None:
    async def scenario() -> None:
        hub = PreviewHub()
        assert hub.publish("j1", "jpeg", b"nobody") == 0
        async with hub.subscribe("j1") as first, hub.subscribe("j1") as second:
            async with hub.subscribe("j2") as other:
                assert hub.subscriber_count("j1") == 2 and hub.subscriber_count() == 3
                assert hub.publish("j1", "JPG", b"\xff\xd8frame") == 2
                for subscription in (first, second):
                    frame = await subscription.get()
                    assert (frame.job_id, frame.image_format) == ("j1", "jpeg")
                    assert frame.data == b"\xff\xd8frame" and frame.base64 == "/9hmcmFtZQ=="
                hub.publish("j2", "image/png", b"png")
                frame = await anext(other)
                assert frame.image_format == "png"
        assert hub.subscriber_count() == 0

    run(scenario())


def test_a_slow_subscriber_loses_its_oldest_frames_and_nobody_waits() -> None:
    async def scenario() -> None:
        hub = PreviewHub(queue_size=2)
        seen_by_fast: list[bytes] = []
        async with hub.subscribe("j1") as slow, hub.subscribe("j1") as fast:
            for i in range(10):
                assert hub.publish("j1", "png", b"frame%d" % i) == 2  # returns at once
                seen_by_fast.append((await fast.get()).data)
            assert seen_by_fast == [b"frame%d" % i for i in range(10)]
            assert fast.dropped == 0
            assert [(await slow.get()).data for _ in range(2)] == [b"frame8", b"frame9"]
            assert slow.dropped == 8

    run(scenario())


def test_preview_mistakes_are_refused_with_a_reason() -> None:
    async def scenario() -> None:
        hub = PreviewHub()
        with pytest.raises(PreviewError, match="unknown preview image format 'bmp'"):
            hub.publish("j1", "bmp", b"x")
        subscription = hub.subscribe("j1")
        with pytest.raises(PreviewError, match="not open"):
            await subscription.get()

    run(scenario())
    with pytest.raises(ValueError, match="queue_size"):
        PreviewHub(queue_size=0)


# --- following a job --------------------------------------------------------------------------

STORES: dict[str, Callable[[Path], JobStore]] = {
    "memory": lambda folder: MemoryJobStore(),
    "sqlite": lambda folder: SqliteJobStore.open(folder / "jobs.sqlite"),
}


async def collect(feed: JobFeed) -> list[list[ClientEvent]]:
    async with feed:
        return [batch async for batch in feed]


@pytest.mark.parametrize("kind", STORES)
def test_a_finished_job_is_replayed_from_any_point_and_the_feed_ends(
    kind: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        store = STORES[kind](tmp_path)
        await run_to_success(store, "j1")
        batches = await collect(JobFeed(store, "j1", view=job_view))
        everything = [e for batch in batches for e in batch]
        assert [e.event for e in everything][-3:] == ["output", "output", "status"]
        assert everything[-1].final
        started = next(e for e in everything if e.event == "started")
        assert started.seq is not None
        rest = await collect(JobFeed(store, "j1", view=job_view, after=started.seq))
        assert [e for batch in rest for e in batch] == everything[everything.index(started) + 1 :]
        last = everything[-1].seq
        assert last is not None
        assert await collect(JobFeed(store, "j1", view=job_view, after=last)) == []
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await store.close()

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_the_feed_beats_when_idle_merges_previews_and_ends_at_the_final_status(
    kind: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        store, hub = STORES[kind](tmp_path), PreviewHub()
        await store.enqueue(NewJob(id="j1", workflow=GRAPH))
        feed = JobFeed(store, "j1", view=job_view, previews=hub, heartbeat_s=0.01)
        async with feed:
            queued = await anext(feed)
            assert [e.data for e in queued] == [{"status": "queued"}]
            assert await anext(feed) == []  # nothing happens: a heartbeat is due
            await store.claim(WORKER, lease_s=60)
            assert hub.subscriber_count("j1") == 1
            hub.publish("j1", "png", b"latent")
            seen: list[ClientEvent] = []
            while not any(e.event == "preview" for e in seen):
                seen.extend(await anext(feed))
            preview = next(e for e in seen if e.event == "preview")
            assert preview.seq is None and preview.data == {"format": "png", "base64": "bGF0ZW50"}
            await store.complete("j1", WORKER, outputs_of("j1"))
            async for batch in feed:
                seen.extend(batch)
            assert seen[-1].final and seen[-1].data["status"] == "succeeded"
        assert hub.subscriber_count() == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await store.close()

    run(scenario())


def test_closing_ends_the_feed_and_a_resume_past_the_end_still_sees_the_end() -> None:
    async def scenario() -> None:
        store, closing = MemoryJobStore(), asyncio.Event()
        await store.enqueue(NewJob(id="j1", workflow=GRAPH))
        feed = JobFeed(store, "j1", view=job_view, closing=closing)
        async with feed:
            await anext(feed)
            closing.set()
            assert [batch async for batch in feed] == []
        assert asyncio.all_tasks() == {asyncio.current_task()}

        # A made-up resume point beyond every event: the job's end is noticed from the job.
        await store.claim(WORKER, lease_s=60)
        feed = JobFeed(store, "j1", view=job_view, after=10**9, heartbeat_s=0.01)
        async with feed:
            await store.complete("j1", WORKER, [])
            assert [batch async for batch in feed if batch] == []

    run(scenario())
