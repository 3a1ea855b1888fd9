"""Routing in the dispatcher, over the in-memory store and fake ComfyUI instances: a lane learns
what its instance holds from the jobs that succeed there, and claims jobs for those models first."""

from __future__ import annotations

import asyncio
from itertools import pairwise

from comfyfleet.jobs import Dispatcher, JobStatus, MemoryJobStore, NewJob
from tests.unit.fake_comfy import FakeComfy
from tests.unit.test_dispatcher import SlowClaimsFor, graph, run, sleep, until_done

A, B = "checkpoints/a.safetensors", "checkpoints/b.safetensors"


def test_a_lane_holds_the_models_of_its_last_successful_job() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        await store.enqueue(NewJob("first", graph(sleep(0.01)), models=(A,)))
        d.notify()
        await until_done(store, ["first"])
        assert d.loaded_models(0) == {A}
        await store.enqueue(NewJob("plain", graph(sleep(0.01))))  # no loaders: A stays
        d.notify()
        await until_done(store, ["plain"])
        assert d.loaded_models(0) == {A}
        fail = {"class_type": "FleetFail", "inputs": {"message": "no"}}
        await store.enqueue(NewJob("broken", graph(fail), models=(B,), max_attempts=1))
        d.notify()
        await until_done(store, ["broken"])
        assert d.loaded_models(0) == {A}  # a failed job proves nothing was loaded

    run(body, instances=1)


def test_jobs_for_a_model_go_to_the_instance_holding_it() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        d.lanes[0].loaded, d.lanes[1].loaded = frozenset({A}), frozenset({B})
        for lane in d.lanes.values():  # the whole queue is there before anyone claims
            lane.serving = False
        ids = []
        for n in range(12):
            model = A if n % 2 else B
            ids.append(f"{'a' if model == A else 'b'}-{n}")
            await store.enqueue(NewJob(ids[-1], graph(sleep(0.01)), models=(model,)))
        for lane in d.lanes.values():
            lane.serving = True
        d.notify()
        await until_done(store, ids)
        jobs = [await store.get(i) for i in ids]
        assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}
        assert {j.instance for j in jobs if j.id.startswith("a-")} == {0}
        assert {j.instance for j in jobs if j.id.startswith("b-")} == {1}

    run(body)


def test_an_idle_instance_still_takes_a_job_for_another_model() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        d.lanes[0].loaded = frozenset({A})
        await store.enqueue(NewJob("b", graph(sleep(0.01)), models=(B,)))
        d.notify()
        await until_done(store, ["b"])
        assert (await store.get("b")).status is JobStatus.SUCCEEDED
        assert d.loaded_models(0) == {B}

    run(body, instances=1)


def test_a_lane_claims_for_what_its_queue_will_have_loaded() -> None:
    """Two slots are a pipeline: the job claimed now runs after the one queued in ComfyUI, so
    it is chosen for that job's models, and alternating submissions run grouped."""

    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        lane = d.lanes[0]
        lane.serving = False
        ids = [f"{'a' if n % 2 == 0 else 'b'}-{n}" for n in range(8)]
        for job_id in ids:
            model = A if job_id.startswith("a") else B
            await store.enqueue(NewJob(job_id, graph(sleep(0.01)), models=(model,)))
        lane.serving = True
        d.notify()
        await until_done(store, ids)
        ran = sorted([await store.get(i) for i in ids], key=lambda job: job.started_at or 0)
        switches = sum(1 for x, y in pairwise(ran) if x.models != y.models)
        assert switches == 1, [job.id for job in ran]

    run(body, instances=1)


def test_a_fresh_lane_fills_its_pipeline_with_one_model() -> None:
    """Fills run at once from several places; each claim sees the one before, so the second
    slot takes the first job's model rather than the next job in line."""

    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        lane = d.lanes[0]
        lane.serving = False
        while not lane.listening:
            await asyncio.sleep(0.005)
        for job_id, model in (("a-1", A), ("b-1", B), ("a-2", A)):
            await store.enqueue(NewJob(job_id, graph(sleep(0.2)), models=(model,)))
        lane.serving = True
        await asyncio.gather(lane.fill(), lane.fill(), lane.fill())
        assert sorted(flight.job.id for flight in lane.in_flight.values()) == ["a-1", "a-2"]
        await until_done(store, ["a-1", "b-1", "a-2"])

    run(body, instances=1, store=SlowClaimsFor(0, 0.02))  # claims that take a round trip


def test_a_job_that_needs_a_switch_waits_for_a_free_instance_not_behind_running_work() -> None:
    async def body(store: MemoryJobStore, d: Dispatcher, fakes: list[FakeComfy]) -> None:
        await store.enqueue(NewJob("a", graph(sleep(0.3)), models=(A,)))
        d.notify()
        lane = d.lanes[0]
        while not lane.in_flight:
            await asyncio.sleep(0.005)
        await store.enqueue(NewJob("b", graph(sleep(0.01)), models=(B,)))
        d.notify()
        await asyncio.sleep(0.1)  # the lane has a free slot meanwhile, and claims nothing
        assert (await store.get("b")).status is JobStatus.QUEUED
        await until_done(store, ["a", "b"])
        a, b = await store.get("a"), await store.get("b")
        assert b.status is JobStatus.SUCCEEDED
        assert a.finished_at is not None and b.started_at is not None
        assert b.started_at >= a.finished_at

    run(body, instances=1)
