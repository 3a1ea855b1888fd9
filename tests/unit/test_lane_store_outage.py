"""A store that stops answering while a job runs: the lane keeps going, keeps the attempt's
result and reports it when the store is back. With the lease still held the job completes as if
nothing happened; with the lease lapsed (the job went on elsewhere) the late result is refused,
logged and dropped."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from comfyfleet.jobs import (
    Dispatcher,
    DispatcherSettings,
    JobOutput,
    JobStatus,
    JobStoreError,
    MemoryJobStore,
    NewJob,
)
from comfyfleet.jobs._model import Job, JobEvent
from comfyfleet.supervise import InstanceEvent, State
from tests.unit.fake_comfy import FakeComfy
from tests.unit.test_dispatcher import graph, sleep, until_done


class AwayStore(MemoryJobStore):
    """Fails the calls a running job makes while `away` (claims are not tried meanwhile)."""

    away = False

    def _check(self) -> None:
        if self.away:
            raise JobStoreError("the job store postgresql://db/x failed: connection timed out")

    async def complete(self, *args: Any, **kwargs: Any) -> Job | None:
        self._check()
        return await super().complete(*args, **kwargs)

    async def fail(self, *args: Any, **kwargs: Any) -> Job | None:
        self._check()
        return await super().fail(*args, **kwargs)

    async def publish(self, *args: Any, **kwargs: Any) -> JobEvent:
        self._check()
        return await super().publish(*args, **kwargs)

    async def set_running_info(self, *args: Any, **kwargs: Any) -> bool:
        self._check()
        return await super().set_running_info(*args, **kwargs)


async def _finished_while_away(store: AwayStore, d: Dispatcher, fake: FakeComfy) -> Job:
    await store.enqueue(NewJob("j", graph(sleep(0.2))))
    d.notify()
    while (job := await store.get("j")).prompt_id is None:
        await asyncio.sleep(0.01)
    store.away = True
    while job.prompt_id not in fake.ran:  # done in ComfyUI, unreported
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert (await store.get("j")).status == JobStatus.RUNNING
    assert "j" in d.lanes[0].finishing  # kept, slot free
    assert not d.lanes[0].in_flight
    return job


def _run(body: Any) -> None:
    async def main() -> None:
        store = AwayStore()
        fake = FakeComfy("i0")
        options = DispatcherSettings(slots_per_instance=1, lease_s=5, poll_s=0.02)
        d = Dispatcher(
            store, options, make_client=fake.client, make_events=fake.events, worker="w1"
        )
        fake.start()
        d.start()
        d.on_instance_event(InstanceEvent(0, State.STARTING, State.READY, port=9000))
        try:
            async with asyncio.timeout(10):
                await body(store, d, fake)
        finally:
            await d.stop()
            fake.kill()
            await store.close()

    asyncio.run(main())


def test_a_result_kept_through_an_outage_completes_the_job_when_the_store_is_back() -> None:
    async def body(store: AwayStore, d: Dispatcher, fake: FakeComfy) -> None:
        await _finished_while_away(store, d, fake)
        store.away = False
        await until_done(store, ["j"])
        job = await store.get("j")
        assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
        assert [e.data.get("status") for e in await store.events("j")].count("succeeded") == 1

    _run(body)


def test_a_late_result_is_refused_once_the_job_went_on_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "comfyfleet.jobs")

    async def body(store: AwayStore, d: Dispatcher, fake: FakeComfy) -> None:
        await _finished_while_away(store, d, fake)
        d.lanes[0].serving = False  # this worker takes nothing more
        assert await MemoryJobStore.release_expired(store, now=time.time() + 60) == ["j"]
        other = await store.claim("w2", lease_s=30)
        assert other is not None and other.attempts == 2
        store.away = False
        while "j" in d.lanes[0].finishing:
            await asyncio.sleep(0.01)
        assert (await store.get("j")).status == JobStatus.RUNNING  # still w2's
        assert await store.complete("j", "w2", [JobOutput(type="text", text="w2's")])
        job = await store.get("j")
        assert job.status == JobStatus.SUCCEEDED and job.outputs[0].text == "w2's"

    _run(body)
    said = caplog.text
    assert "job j: reporting its result failed" in said
    assert "job j: the store refused its result" in said
