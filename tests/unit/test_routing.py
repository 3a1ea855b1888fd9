"""Routing in the dispatcher, over the in-memory store and fake ComfyUI instances: a lane learns
what its instance holds from the jobs that succeed there, and claims jobs for those models first."""

from __future__ import annotations

from itertools import pairwise

from comfyfleet.jobs import Dispatcher, JobStatus, MemoryJobStore, NewJob
from tests.unit.fake_comfy import FakeComfy
from tests.unit.test_dispatcher import graph, run, sleep, until_done

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
