"""The idle watchdogs: POST /free after an idle spell, a restart when memory grew, both only
between jobs. Fake ComfyUI instances, a fake fleet, and a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from comfyfleet.jobs import Dispatcher, DispatcherSettings, JobStatus, MemoryJobStore, NewJob
from comfyfleet.supervise import InstanceEvent, InstanceStatus, State
from comfyfleet.watchdog import IdleWatch, MemoryUse, NvmlVram, WatchdogSettings
from tests.unit.fake_comfy import FakeComfy

MIB = 1 << 20
SAVE = {"class_type": "SaveImage", "inputs": {"filename_prefix": "cat", "images": ["1", 0]}}


def graph(seconds: float = 0.02) -> dict[str, Any]:
    return {"1": {"class_type": "FleetSleep", "inputs": {"seconds": seconds}}, "9": SAVE}


@dataclass
class FakeFleet:
    """What the watchdog sees of a supervisor: statuses, and restarts it asks for."""

    rss_mib: dict[int, int]
    attached: set[int] = field(default_factory=set)
    recycled: list[tuple[int, str]] = field(default_factory=list)

    def status(self) -> list[InstanceStatus]:
        return [
            InstanceStatus(
                index=i,
                state=State.READY,
                pid=4000 + i,
                port=9000 + i,
                device="cpu",
                started_at=None,
                ready_since=None,
                restarts=0,
                rss_bytes=rss * MIB,
                version=None,
                reason="",
                attached=i in self.attached,
            )
            for i, rss in self.rss_mib.items()
        ]

    async def recycle(self, index: int, reason: str) -> bool:
        self.recycled.append((index, reason))
        return index not in self.attached


@dataclass
class World:
    store: MemoryJobStore
    dispatcher: Dispatcher
    fakes: list[FakeComfy]
    fleet: FakeFleet
    clock: list[float]

    def watch(self, **settings: Any) -> IdleWatch:
        memory = settings.pop("memory", None)
        options = WatchdogSettings(**{"stall_s": None, **settings})
        return IdleWatch(
            self.dispatcher, self.fleet, options, memory=memory, clock=lambda: self.clock[0]
        )

    def event(self, index: int, old: State, new: State) -> None:
        self.dispatcher.on_instance_event(InstanceEvent(index, old, new, port=9000 + index))


def run(body: Callable[[World], Awaitable[None]], rss_mib: dict[int, int] | None = None) -> None:
    async def main() -> None:
        store = MemoryJobStore()
        fakes = [FakeComfy(f"i{i}", index=i) for i in range(2)]
        by_url = {f"http://127.0.0.1:{9000 + i}": fake for i, fake in enumerate(fakes)}
        dispatcher = Dispatcher(
            store,
            DispatcherSettings(lease_s=5, poll_s=0.02, cancel_poll_s=0.01),
            make_client=lambda url: by_url[url].client(url),
            make_events=lambda url, cid: by_url[url].events(url, cid),
            worker="w1",
        )
        world = World(store, dispatcher, fakes, FakeFleet(rss_mib or {0: 100, 1: 100}), [0.0])
        for fake in fakes:
            fake.start()
        dispatcher.start()
        for i in range(2):
            world.event(i, State.STARTING, State.READY)
        try:
            async with asyncio.timeout(10):
                await body(world)
        finally:
            await dispatcher.stop()
            for fake in fakes:
                fake.kill()
            await store.close()

    asyncio.run(main())


async def at(world: World, watch: IdleWatch, now: float) -> None:
    world.clock[0] = now
    await watch.check()


def test_an_instance_idle_long_enough_is_told_to_free_its_memory_once_per_idle_spell() -> None:
    async def body(w: World) -> None:
        watch = w.watch(idle_free_s=60)
        w.dispatcher.lanes[0].loaded = frozenset({"checkpoints/a.safetensors"})
        await at(w, watch, 0)
        await at(w, watch, 59)
        assert [f.freed for f in w.fakes] == [[], []]
        await at(w, watch, 61)
        assert [f.freed for f in w.fakes] == [[{"unload_models": True, "free_memory": True}]] * 2
        assert w.dispatcher.lanes[0].loaded == frozenset()  # it holds no model any more
        await at(w, watch, 500)
        assert [len(f.freed) for f in w.fakes] == [1, 1]  # once per idle spell

        # A job on instance 0 ends its idle spell; a new one starts after it.
        await w.store.enqueue(NewJob("job", graph()))
        await w.dispatcher.drain(timeout=5)
        assert (await w.store.get("job")).instance == 0
        await at(w, watch, 501)
        await at(w, watch, 560)
        assert [len(f.freed) for f in w.fakes] == [1, 1]
        await at(w, watch, 562)
        assert [len(f.freed) for f in w.fakes] == [2, 1]

    run(body)


def test_no_free_while_a_job_runs() -> None:
    async def body(w: World) -> None:
        watch = w.watch(idle_free_s=10)
        await at(w, watch, 0)
        await w.store.enqueue(NewJob("long", graph(seconds=1.0)))
        await w.dispatcher.dispatch()
        while not w.dispatcher.lanes[0].in_flight:
            await asyncio.sleep(0.005)
        await at(w, watch, 100)
        assert w.fakes[0].freed == [] and len(w.fakes[1].freed) == 1

    run(body)


def test_an_idle_instance_whose_rss_grew_is_restarted_and_takes_no_job_until_ready() -> None:
    async def body(w: World) -> None:
        watch = w.watch(rss_mb=4096)
        await at(w, watch, 0)
        assert w.fleet.recycled == [
            (0, "watchdog: memory grew past its limit while idle (RSS 5000 MiB > rss_mb 4096)")
        ]
        lane = w.dispatcher.lanes[0]
        assert not lane.serving and lane.paused == w.fleet.recycled[0][1]
        for n in range(2):
            await w.store.enqueue(NewJob(f"j{n}", graph(0.1)))
        await w.dispatcher.drain(timeout=5)
        assert {(await w.store.get(f"j{n}")).instance for n in range(2)} == {1}

        # The supervisor restarts it: out of service, then ready (after its warm-up).
        w.event(0, State.READY, State.RESTARTING)
        w.event(0, State.RESTARTING, State.STARTING)
        w.event(0, State.STARTING, State.WARMING)
        assert not lane.serving
        w.event(0, State.WARMING, State.READY)
        assert lane.serving and lane.paused is None
        w.fleet.rss_mib[0] = 300
        await at(w, watch, 10)
        assert len(w.fleet.recycled) == 1

    run(body, rss_mib={0: 5000, 1: 100})


def test_memory_is_checked_only_between_jobs() -> None:
    async def body(w: World) -> None:
        watch = w.watch(rss_mb=4096)
        await w.store.enqueue(NewJob("long", graph(seconds=0.5)))
        await w.dispatcher.dispatch()
        while not w.dispatcher.lanes[0].in_flight:
            await asyncio.sleep(0.005)
        w.fleet.rss_mib[0] = 9000
        await at(w, watch, 0)
        assert w.fleet.recycled == []
        await w.dispatcher.drain(timeout=5)
        assert (await w.store.get("long")).status == JobStatus.SUCCEEDED
        await at(w, watch, 1)
        assert [index for index, _ in w.fleet.recycled] == [0]

    run(body)


def test_gpu_memory_past_its_limit_restarts_an_idle_instance() -> None:
    async def body(w: World) -> None:
        vram = {4000: 9000 * MIB, 4001: 2000 * MIB}

        def memory(status: InstanceStatus) -> MemoryUse:
            assert status.pid is not None
            return MemoryUse(status.rss_bytes, vram[status.pid])

        watch = w.watch(vram_mb=8192, memory=memory)
        await at(w, watch, 0)
        assert w.fleet.recycled == [
            (0, "watchdog: memory grew past its limit while idle (VRAM 9000 MiB > vram_mb 8192)")
        ]

    run(body)


def test_an_attached_server_is_never_restarted() -> None:
    async def body(w: World) -> None:
        w.fleet.attached = {1}
        watch = w.watch(rss_mb=1000)
        await at(w, watch, 0)
        assert [index for index, _ in w.fleet.recycled] == [0]

    run(body, rss_mib={0: 5000, 1: 5000})


class FakeNvml:
    """NVML as pynvml shows it: devices, and the processes using each with their memory."""

    def __init__(self, devices: list[list[tuple[int, int | None]]], fail: bool = False) -> None:
        self.devices, self.fail, self.shut = devices, fail, False

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self.devices[handle]]


def test_gpu_memory_of_a_process_tree_is_summed_over_every_gpu() -> None:
    nvml = FakeNvml([[(10, 3 * MIB), (99, 50 * MIB)], [(11, 4 * MIB), (12, None)]])
    vram = NvmlVram(nvml)
    assert vram({10, 11, 12}) == 7 * MIB  # a process NVML cannot measure counts nothing
    assert vram({55}) is None  # NVML does not see these processes: unknown, not zero
    vram.close()
    assert nvml.shut


def test_no_gpu_memory_readings_without_nvml() -> None:
    assert NvmlVram(FakeNvml([], fail=True))({10}) is None
