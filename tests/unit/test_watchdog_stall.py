"""The stall watchdog in the dispatcher, over the in-memory store and fake ComfyUI instances
whose `FleetWedge` node blocks without a word."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.jobs import (
    Dispatcher,
    DispatcherSettings,
    JobStatus,
    MemoryJobStore,
    NewJob,
    StallSettings,
)
from comfyfleet.jobs._stall import StallWatch
from comfyfleet.supervise import InstanceEvent, State
from tests.unit.fake_comfy import FakeComfy

SAVE = {"class_type": "SaveImage", "inputs": {"filename_prefix": "cat", "images": ["1", 0]}}
FAST = StallSettings(stall_s=0.2, interrupt_grace_s=0.2)


def graph(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {str(i + 1): node for i, node in enumerate(nodes)} | {"9": SAVE}


def wedge(instance: int = 0, *, hears_interrupt: bool = False) -> dict[str, Any]:
    inputs = {"instance": instance, "hears_interrupt": hears_interrupt}
    return {"class_type": "FleetWedge", "inputs": inputs}


def sleep(seconds: float = 0.02) -> dict[str, Any]:
    return {"class_type": "FleetSleep", "inputs": {"seconds": seconds}}


@dataclass
class World:
    store: MemoryJobStore
    dispatcher: Dispatcher
    fakes: list[FakeComfy]
    restarts: list[tuple[int, str]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def run(
    body: Callable[[World], Awaitable[None]],
    *,
    instances: int = 2,
    stall: StallSettings | None = FAST,
    can_restart: bool = True,
) -> None:
    async def main() -> None:
        store = MemoryJobStore()
        fakes = [FakeComfy(f"i{i}", index=i) for i in range(instances)]
        by_url = {f"http://127.0.0.1:{9000 + i}": fake for i, fake in enumerate(fakes)}

        async def restart(index: int, reason: str) -> bool:
            """What the supervisor does: RESTARTING, a fresh process, ready again."""
            world.restarts.append((index, reason))
            if not can_restart:
                return False
            port = 9000 + index
            dispatcher.on_instance_event(
                InstanceEvent(index, State.BUSY, State.RESTARTING, reason, port=port)
            )
            fakes[index].restart()

            async def back() -> None:
                await asyncio.sleep(0.05)
                for old, new in ((State.RESTARTING, State.STARTING), (State.STARTING, State.READY)):
                    dispatcher.on_instance_event(InstanceEvent(index, old, new, port=port))

            world.tasks.add(asyncio.create_task(back()))
            return True

        dispatcher = Dispatcher(
            store,
            DispatcherSettings(lease_s=5, poll_s=0.02, cancel_poll_s=0.01, stall=stall),
            make_client=lambda url: by_url[url].client(url),
            make_events=lambda url, cid: by_url[url].events(url, cid),
            worker="w1",
            restart=restart,
        )
        world = World(store, dispatcher, fakes)
        for fake in fakes:
            fake.start()
        dispatcher.start()
        for i in range(instances):
            dispatcher.on_instance_event(
                InstanceEvent(i, State.STARTING, State.READY, port=9000 + i)
            )
        try:
            async with asyncio.timeout(10):
                while not all(fake.sockets for fake in fakes):  # as a real lane, long before
                    await asyncio.sleep(0.005)  # its first job: the stall clock starts with it
                await body(world)
        finally:
            await dispatcher.stop()
            for fake in fakes:
                fake.kill()
            for task in world.tasks:
                task.cancel()
            await store.close()

    asyncio.run(main())


async def until(predicate: Callable[[], Awaitable[bool]]) -> None:
    while not await predicate():
        await asyncio.sleep(0.01)


async def done(store: MemoryJobStore, *ids: str) -> None:
    async def terminal() -> bool:
        jobs = [await store.get(i) for i in ids]
        return all(job.terminal for job in jobs)

    await until(terminal)


async def stalled_events(store: MemoryJobStore, job_id: str) -> list[dict[str, Any]]:
    return [e.data for e in await store.events(job_id) if e.kind == "stalled"]


async def retries(store: MemoryJobStore, job_id: str) -> list[dict[str, Any]]:
    events = await store.events(job_id)
    return [e.data["error"] for e in events if e.kind == "status" and e.data.get("retry")]


def test_a_wedged_instance_is_restarted_and_its_job_completes_on_the_other() -> None:
    async def body(w: World) -> None:
        await w.store.enqueue(NewJob("stuck", graph(wedge(instance=0))))
        await w.dispatcher.dispatch()
        await done(w.store, "stuck")
        job = await w.store.get("stuck")
        assert (job.status, job.attempts, job.instance) == (JobStatus.SUCCEEDED, 2, 1)
        assert len(w.fakes[0].interrupts) == 1  # that prompt asked first, then restarted
        assert w.fakes[0].interrupts[0] is not None
        assert len(w.restarts) == 1 and w.restarts[0][0] == 0
        assert re.fullmatch(
            r"watchdog: job stuck made no progress for 0\.[2-9]s"
            r" and ignored an interrupt for 0\.2s",
            w.restarts[0][1],
        )
        [error] = await retries(w.store, "stuck")
        assert error["code"] == "instance_stalled" and error["retryable"] is True
        assert (error["instance"], error["node_id"], error["node_type"]) == (0, "1", "FleetWedge")
        assert error["action"] == "restarted"
        assert re.fullmatch(
            r"instance 0: no progress for 0\.[2-9]s at node 1 \(FleetWedge\); it ignored an "
            r"interrupt for 0\.2s, so the instance was restarted",
            error["message"],
        )
        interrupt, restart = await stalled_events(w.store, "stuck")
        assert interrupt["action"] == "interrupt" and interrupt["node_type"] == "FleetWedge"
        assert restart == {"instance": 0, "action": "restarted"}

        # The instance is back: it takes jobs again.
        lane = w.dispatcher.lanes[0]
        await until(lambda: _true(lane.serving and lane.paused is None))
        for n in range(2):
            await w.store.enqueue(NewJob(f"after{n}", graph(sleep(0.2))))
        await w.dispatcher.dispatch()
        await done(w.store, "after0", "after1")
        jobs = [await w.store.get(f"after{n}") for n in range(2)]
        assert {j.instance for j in jobs} == {0, 1}

    run(body)


async def _true(value: bool) -> bool:
    return value


def test_jobs_queued_behind_a_wedged_job_lose_their_attempt_and_run_after_the_restart() -> None:
    async def body(w: World) -> None:
        await w.store.enqueue(NewJob("stuck", graph(wedge(instance=0)), max_attempts=1))
        await w.store.enqueue(NewJob("behind", graph(sleep())))
        await w.dispatcher.dispatch()
        await done(w.store, "stuck", "behind")
        stuck, behind = await w.store.get("stuck"), await w.store.get("behind")
        assert stuck.status == JobStatus.FAILED and stuck.error is not None
        assert stuck.error["code"] == "instance_stalled"
        assert (behind.status, behind.attempts) == (JobStatus.SUCCEEDED, 2)
        [lost] = await retries(w.store, "behind")
        assert lost["code"] == "instance_lost"
        assert lost["message"].startswith("instance 0: taken out of service (watchdog: job stuck")
        assert [index for index, _ in w.restarts] == [0]

    run(body, instances=1)


def test_a_stalled_job_whose_interrupt_takes_ends_its_attempt_without_a_restart() -> None:
    async def body(w: World) -> None:
        await w.store.enqueue(
            NewJob("quiet", graph(wedge(instance=0, hears_interrupt=True)), max_attempts=1)
        )
        await w.dispatcher.dispatch()
        await done(w.store, "quiet")
        job = await w.store.get("quiet")
        assert job.status == JobStatus.FAILED and job.error is not None
        assert (job.error["code"], job.error["action"]) == ("instance_stalled", "interrupted")
        assert re.fullmatch(
            r"instance 0: no progress for 0\.[2-9]s at node 1 \(FleetWedge\); interrupted",
            job.error["message"],
        )
        assert w.restarts == []
        assert w.dispatcher.lanes[0].serving and w.dispatcher.lanes[0].paused is None

    run(body, instances=1)


def test_an_instance_that_cannot_be_restarted_takes_no_job_until_it_is_idle() -> None:
    async def body(w: World) -> None:
        await w.store.enqueue(NewJob("stuck", graph(wedge(instance=0))))
        await w.dispatcher.dispatch()
        await done(w.store, "stuck")
        job = await w.store.get("stuck")
        assert (job.status, job.instance) == (JobStatus.SUCCEEDED, 1)
        [error] = await retries(w.store, "stuck")
        assert error["action"] == "abandoned"
        assert "so the instance was restarted" not in error["message"]
        lane = w.dispatcher.lanes[0]
        assert (lane.serving, lane.paused) == (False, w.restarts[0][1])
        # Still busy with the stuck prompt: a probe saying so does not bring it back.
        w.dispatcher.on_instance_event(InstanceEvent(0, State.BUSY, State.BUSY, port=9000))
        assert not lane.serving
        w.dispatcher.on_instance_event(InstanceEvent(0, State.BUSY, State.READY, port=9000))
        assert lane.serving and lane.paused is None

    run(body, can_restart=False)


def test_a_job_is_stalled_only_past_twice_its_own_longest_silence() -> None:
    async def body(w: World) -> None:
        await w.store.enqueue(NewJob("slow", graph(wedge(instance=0, hears_interrupt=True))))
        await w.dispatcher.dispatch()
        lane = w.dispatcher.lanes[0]
        await until(lambda: _true(any(f.node for f in lane.in_flight.values())))
        [flight] = lane.in_flight.values()
        assert flight.heard_at is not None
        flight.longest_gap = 10.0  # its steps took 10 s each so far
        watch = StallWatch(StallSettings(stall_s=5, interrupt_grace_s=30), None, w.dispatcher.wake)
        assert await watch.check([lane], now=flight.heard_at + 19) == []
        assert flight.stall is None
        assert await watch.check([lane], now=flight.heard_at + 21) == ["slow"]
        assert flight.stall is not None and round(flight.stall.silent_s) == 21

    run(body, instances=1, stall=None)


def test_no_stall_watchdog_when_it_is_off() -> None:
    async def body(w: World) -> None:
        await w.store.enqueue(NewJob("stuck", graph(wedge(instance=0))))
        await w.dispatcher.dispatch()
        lane = w.dispatcher.lanes[0]
        await until(lambda: _true(any(f.node for f in lane.in_flight.values())))
        await asyncio.sleep(0.5)
        assert (await w.store.get("stuck")).status == JobStatus.RUNNING
        assert w.restarts == [] and w.fakes[0].interrupts == []

    run(body, instances=1, stall=None)
