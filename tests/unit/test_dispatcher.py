"""The dispatcher over the in-memory store and fake ComfyUI instances."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from comfyfleet.jobs import (
    Dispatcher,
    DispatcherSettings,
    JobOptions,
    JobStatus,
    MemoryJobStore,
    NewJob,
    Timeouts,
)
from comfyfleet.supervise import InstanceEvent, State
from tests.unit.fake_comfy import FakeComfy

SAVE = {"class_type": "SaveImage", "inputs": {"filename_prefix": "cat", "images": ["1", 0]}}


def graph(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {str(i + 1): node for i, node in enumerate(nodes)} | {"9": SAVE}


def sleep(seconds: float = 0.02) -> dict[str, Any]:
    return {"class_type": "FleetSleep", "inputs": {"seconds": seconds}}


class SlowClaimsFor(MemoryJobStore):
    """Claims for one instance take a while, as they may behind a store's worker threads: the
    order in which two lanes' claims land is not the order in which they were made."""

    def __init__(self, instance: int, delay_s: float) -> None:
        super().__init__()
        self.slow, self.delay_s = instance, delay_s

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("instance") == self.slow:
            await asyncio.sleep(self.delay_s)
        return await super().claim(*args, **kwargs)


def run(
    body: Callable[[MemoryJobStore, Dispatcher, list[FakeComfy]], Awaitable[None]],
    instances: int = 2,
    store: MemoryJobStore | None = None,
) -> None:
    async def main() -> None:
        nonlocal store
        store = store or MemoryJobStore()
        fakes = [FakeComfy(f"i{i}") for i in range(instances)]
        by_url = {f"http://127.0.0.1:{9000 + i}": fake for i, fake in enumerate(fakes)}
        dispatcher = Dispatcher(
            store,
            DispatcherSettings(lease_s=5, poll_s=0.02, cancel_poll_s=0.01),
            make_client=lambda url: by_url[url].client(url),
            make_events=lambda url, cid: by_url[url].events(url, cid),
            worker="w1",
        )
        for fake in fakes:
            fake.start()
        dispatcher.start()
        for i in range(instances):
            dispatcher.on_instance_event(
                InstanceEvent(i, State.STARTING, State.READY, port=9000 + i)
            )
        try:
            async with asyncio.timeout(10):
                await body(store, dispatcher, fakes)
        finally:
            await dispatcher.stop()
            for fake in fakes:
                fake.kill()
            await store.close()

    asyncio.run(main())


async def until_done(store: MemoryJobStore, ids: list[str]) -> None:
    while True:
        jobs = [await store.get(i) for i in ids]
        if all(j.terminal for j in jobs):
            return
        await asyncio.sleep(0.01)


def test_jobs_spread_over_both_instances_and_complete_once() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        ids = [f"j{n}" for n in range(20)]
        for job_id in ids:
            await store.enqueue(NewJob(job_id, graph(sleep(0.01))))
        await d.drain(timeout=10)  # returns once the queue is empty and nothing is in flight
        jobs = [await store.get(i) for i in ids]
        assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}
        assert {j.instance for j in jobs} == {0, 1}
        assert all(j.attempts == 1 for j in jobs)
        assert sum(len(f.ran) for f in fakes) == 20  # none ran twice
        first = jobs[0].outputs[0]
        assert first.url == "/v1/outputs/j0/cat_00001_.png"
        assert first.kind == "images"

    run(body)


def test_a_job_arriving_while_an_instance_submits_goes_to_the_idle_one() -> None:
    """ComfyUI answers POST /prompt late while its worker runs: the lane still submitting its
    first job must not take a job that arrives meanwhile into its second slot while the other
    instance idles."""

    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        for fake in fakes:
            fake.submit_delay_s = 0.3
        await store.enqueue(NewJob("first", graph(sleep(0.5))))
        await d.dispatch()
        while (await store.get("first")).instance is None:
            await asyncio.sleep(0.005)
        await store.enqueue(NewJob("second", graph(sleep(0.5))))
        await d.dispatch()
        await until_done(store, ["first", "second"])
        first, second = await store.get("first"), await store.get("second")
        assert {first.instance, second.instance} == {0, 1}

    # The busy lane (instance 0, the first to claim) would win a race of claims.
    run(body, store=SlowClaimsFor(instance=1, delay_s=0.05))


def test_a_node_error_fails_the_job_at_once_naming_the_node() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        fail = {"class_type": "FleetFail", "inputs": {"message": "no cats today"}}
        await store.enqueue(NewJob("bad", graph(fail)))
        d.notify()
        await until_done(store, ["bad"])
        job = await store.get("bad")
        assert job.status == JobStatus.FAILED and job.attempts == 1
        assert job.error is not None
        assert job.error["message"] == "node 1 (FleetFail): RuntimeError: no cats today"
        assert (job.error["node_id"], job.error["node_type"]) == ("1", "FleetFail")

    run(body)


def test_a_rejected_graph_fails_without_retry() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        await store.enqueue(NewJob("nope", graph({"class_type": "Nope", "inputs": {}})))
        d.notify()
        await until_done(store, ["nope"])
        job = await store.get("nope")
        assert job.status == JobStatus.FAILED and job.error is not None
        assert job.error["code"] == "invalid_workflow"

    run(body)


def test_an_instance_lost_mid_job_retries_it_elsewhere() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        await store.enqueue(NewJob("long", graph(sleep(0.4))))
        d.notify()
        while (await store.get("long")).instance is None:
            await asyncio.sleep(0.01)
        victim = (await store.get("long")).instance
        assert victim is not None
        fakes[victim].kill()
        d.on_instance_event(
            InstanceEvent(victim, State.READY, State.EXITED, "exited with signal SIGKILL")
        )
        await until_done(store, ["long"])
        job = await store.get("long")
        assert job.status == JobStatus.SUCCEEDED
        assert job.attempts == 2
        assert job.instance == 1 - victim

    run(body)


def test_cancel_running_waiting_in_comfyui_and_still_queued_jobs() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        for job_id in ("running", "behind", "stored"):
            await store.enqueue(NewJob(job_id, graph(sleep(2.0))))
        d.notify()
        while (await store.get("behind")).prompt_id is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert (await store.get("stored")).status == JobStatus.QUEUED  # two slots, both used
        stored = await store.cancel("stored")
        assert stored.status == JobStatus.CANCELLED  # never reached an instance
        await store.cancel("behind")
        await store.cancel("running")
        await until_done(store, ["running", "behind"])
        assert (await store.get("running")).status == JobStatus.CANCELLED
        assert (await store.get("behind")).status == JobStatus.CANCELLED
        assert fakes[0].interrupted  # the running one was interrupted
        assert fakes[0].ran == []  # the waiting one was taken out of ComfyUI's queue

    run(body, instances=1)


def test_higher_priority_runs_first() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        for n in range(4):
            await store.enqueue(NewJob(f"low{n}", graph(sleep(0.01)), priority=0))
        await store.enqueue(NewJob("urgent", graph(sleep(0.01)), priority=10))
        d.notify()
        ids = [f"low{n}" for n in range(4)] + ["urgent"]
        await until_done(store, ids)
        started = {i: (await store.get(i)).started_at or 0 for i in ids}
        assert min(started, key=lambda k: started[k]) == "urgent"

    run(body, instances=1)


def test_queued_jobs_past_their_queue_timeout_fail_with_timeout() -> None:
    from comfyfleet.jobs import DispatcherSettings, JobLimits

    async def go() -> tuple[list[str], dict[str, Any], JobStatus]:
        store = MemoryJobStore()
        limits = JobLimits(queued_timeout_s=60)
        dispatcher = Dispatcher(store, DispatcherSettings(limits=limits))
        await store.enqueue(NewJob(id="old", workflow=graph(sleep())), now=1000.0)
        await store.enqueue(
            NewJob(
                id="own", workflow=graph(sleep()), options=JobOptions(timeouts=Timeouts(queued_s=5))
            ),
            now=1090.0,
        )
        await store.enqueue(NewJob(id="fresh", workflow=graph(sleep())), now=1090.0)
        expired = await dispatcher.expire_queued(now=1100.0)
        old = await store.get("old")
        assert old.error is not None
        return sorted(expired), old.error, (await store.get("fresh")).status

    expired, error, fresh = asyncio.run(go())
    assert expired == ["old", "own"]
    assert error["code"] == "timeout" and error["phase"] == "queued" and not error["retryable"]
    assert fresh is JobStatus.QUEUED


def test_drain_returns_only_when_nothing_is_left_and_times_out_otherwise() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        await d.drain(timeout=1)  # an empty queue: at once
        await store.enqueue(NewJob("slow", graph(sleep(2))))
        try:
            await d.drain(timeout=0.2)
        except TimeoutError:
            pass
        else:
            raise AssertionError("drain returned while a job was running")
        assert (await store.get("slow")).status == JobStatus.RUNNING
        await store.enqueue(NewJob("quick", graph(sleep(0.01))))
        await d.drain(timeout=8)
        assert {(await store.get(i)).status for i in ("slow", "quick")} == {JobStatus.SUCCEEDED}

    run(body)
