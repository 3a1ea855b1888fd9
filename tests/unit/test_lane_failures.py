"""Whatever a job holds, its attempt ends and its slot comes free: one instance, one slot each
time, so a job stuck on the lane would keep the next one from ever running."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

from comfyfleet.comfy import ComfyMessage
from comfyfleet.jobs import Dispatcher, DispatcherSettings, JobStatus, MemoryJobStore, NewJob
from comfyfleet.jobs._failures import attempt_error, scrub_paths
from comfyfleet.supervise import InstanceEvent, State
from tests.unit.fake_comfy import FakeComfy
from tests.unit.test_dispatcher import graph, sleep, until_done

Body = Callable[[MemoryJobStore, Dispatcher, FakeComfy], Awaitable[None]]


def run_one_slot(body: Body, **settings: Any) -> None:
    async def main() -> None:
        store = MemoryJobStore()
        fake = FakeComfy("i0")
        options = DispatcherSettings(
            **(
                {"slots_per_instance": 1, "lease_s": 5, "poll_s": 0.02, "cancel_poll_s": 0.01}
                | settings
            )
        )
        dispatcher = Dispatcher(
            store,
            options,
            make_client=fake.client,
            make_events=fake.events,
            worker="w1",
        )
        fake.start()
        dispatcher.start()
        dispatcher.on_instance_event(InstanceEvent(0, State.STARTING, State.READY, port=9000))
        try:
            async with asyncio.timeout(10):
                await body(store, dispatcher, fake)
        finally:
            await dispatcher.stop()
            fake.kill()
            await store.close()

    asyncio.run(main())


def poisoned(value: Any) -> dict[str, Any]:
    return graph({"class_type": "PrimitiveFloat", "inputs": {"value": value}})


def test_a_graph_json_cannot_carry_fails_at_once_and_frees_the_slot() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fake: FakeComfy) -> None:
        await store.enqueue(NewJob("nan", poisoned(math.nan)))
        await store.enqueue(NewJob("inf", poisoned(math.inf)))
        await store.enqueue(NewJob("ok", graph(sleep(0.01))))
        d.notify()
        await until_done(store, ["nan", "inf", "ok"])
        for job_id in ("nan", "inf"):
            job = await store.get(job_id)
            assert job.status == JobStatus.FAILED and job.attempts == 1
            assert job.error is not None and job.error["code"] == "invalid_job"
            assert job.error["retryable"] is False
            assert job.error["message"].startswith("the job cannot be sent to ComfyUI: ValueError")
        assert (await store.get("ok")).status == JobStatus.SUCCEEDED
        assert fake.ran == [(await store.get("ok")).prompt_id]

    run_one_slot(body)


def test_a_lone_surrogate_in_an_input_fails_the_job_not_the_instance() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fake: FakeComfy) -> None:
        text = {"class_type": "CLIPTextEncode", "inputs": {"text": "\udc80x"}}
        await store.enqueue(NewJob("surrogate", graph(text)))
        await store.enqueue(NewJob("ok", graph(sleep(0.01))))
        d.notify()
        await until_done(store, ["surrogate", "ok"])
        job = await store.get("surrogate")
        assert job.status == JobStatus.FAILED
        assert job.error is not None and job.error["code"] == "invalid_job"
        assert "UnicodeEncodeError" in job.error["message"]
        assert (await store.get("ok")).status == JobStatus.SUCCEEDED

    run_one_slot(body)


def test_a_message_that_breaks_its_handler_ends_that_attempt_only() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fake: FakeComfy) -> None:
        await store.enqueue(NewJob("slow", graph(sleep(0.3))))
        d.notify()
        while (job := await store.get("slow")).prompt_id is None:
            await asyncio.sleep(0.01)
        lane = d.lanes[0]
        data = {"prompt_id": job.prompt_id, "value": "x", "max": 1}
        bad = ComfyMessage("progress", data, job.prompt_id)
        await lane._on_message_guarded(bad)
        assert job.prompt_id not in lane.in_flight
        await until_done(store, ["slow"])
        done = await store.get("slow")
        assert done.status == JobStatus.SUCCEEDED and done.attempts == 2
        assert done.prompt_id != job.prompt_id
        assert job.prompt_id not in fake.ran  # the broken attempt was interrupted in ComfyUI

    run_one_slot(body)


def test_the_watchdog_ends_a_claim_whose_submit_never_happened() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fake: FakeComfy) -> None:
        lane = d.lanes[0]
        lane.serving = False  # keep the loops from claiming while the test plays the lane
        await store.enqueue(NewJob("orphan", graph(sleep(0.01))))
        job = await store.claim("w1", lease_s=5, instance=0, prompt_id="p-orphan")
        assert job is not None
        from comfyfleet.jobs._lane import _InFlight

        lane.in_flight["p-orphan"] = _InFlight(job, "p-orphan")  # claimed, never submitted
        assert await d.watchdog() == []  # within the grace period: a submit may be under way
        assert await d.watchdog(now=lane.in_flight["p-orphan"].since + 2) == ["orphan"]
        ended = await store.get("orphan")
        assert ended.status == JobStatus.QUEUED and ended.error is not None
        assert "watchdog" in ended.error["message"]
        lane.serving = True
        d.notify()
        await until_done(store, ["orphan"])
        assert (await store.get("orphan")).status == JobStatus.SUCCEEDED

    run_one_slot(body, claim_grace_s=1.0)


def test_the_watchdog_restarts_a_dead_follower_and_requeues_its_jobs() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fake: FakeComfy) -> None:
        await store.enqueue(NewJob("held", graph(sleep(0.5))))
        d.notify()
        while (await store.get("held")).status != JobStatus.RUNNING:
            await asyncio.sleep(0.01)
        follower = d._followers[0]
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        assert await d.watchdog() == ["held"]
        assert (await store.get("held")).error is not None
        await until_done(store, ["held"])
        assert (await store.get("held")).status == JobStatus.SUCCEEDED

    run_one_slot(body, lease_s=60)


def test_errors_of_other_kinds_are_classified_in_one_place() -> None:
    too_long = OSError(36, "File name too long")
    name = attempt_error(too_long, instance=1, doing="preparing", from_job=True)
    assert (name.code, name.retryable) == ("invalid_job", False)
    bug = attempt_error(KeyError("x"), instance=1, doing="preparing")
    assert (bug.code, bug.retryable) == ("internal_error", True)
    assert bug.to_dict()["instance"] == 1
    ours = attempt_error(ValueError("bad frame"), instance=1, doing="handling progress")
    assert (ours.code, ours.retryable) == ("internal_error", True)


def test_server_paths_are_cut_from_messages() -> None:
    text = "Invalid latent file: /srv/comfy/workspace/input/../../etc/passwd (errno 2)"
    assert scrub_paths(text) == "Invalid latent file: .../passwd (errno 2)"
    assert scrub_paths("value 1.5 not in list") == "value 1.5 not in list"


def test_a_lane_claims_nothing_while_its_socket_is_not_connected() -> None:
    """A prompt submitted before the instance's socket listens would run unheard (no progress,
    outputs only from the history): after a fast restart the lane waits for its socket."""

    async def body(store: MemoryJobStore, d: Dispatcher, fake: FakeComfy) -> None:
        lane = d.lanes[0]
        while not lane.listening:  # connected once; then its socket drops, as in a restart
            await asyncio.sleep(0.01)
        lane.listening = False
        await store.enqueue(NewJob("waits", graph(sleep(0.01))))
        d.notify()
        await asyncio.sleep(0.3)
        assert (await store.get("waits")).status == JobStatus.QUEUED
        assert lane.free_slots() == 0
        lane.listening = True
        d.notify()
        await until_done(store, ["waits"])
        assert (await store.get("waits")).status == JobStatus.SUCCEEDED

    run_one_slot(body)
