"""What the lanes tell their watch (the metrics' source): a phase per attempt per stage, the
model files an instance had to load, the output store's failures; over the in-memory store and
fake ComfyUI instances."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

from comfyfleet.jobs import (
    Dispatcher,
    DispatcherSettings,
    JobStatus,
    MemoryJobStore,
    NewJob,
    OutputPublisher,
)
from comfyfleet.storage import MemoryStorage, StorageUnavailable
from comfyfleet.supervise import InstanceEvent, State
from tests.unit.fake_comfy import FakeComfy, _Prompt


class Recorder:
    """A JobWatch that keeps what it was told."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []
        self.loads: list[str] = []
        self.storage: list[Exception] = []

    def phase(self, phase: str, seconds: float) -> None:
        self.phases.append((phase, seconds))

    def model_loads(self, models: Collection[str]) -> None:
        self.loads += sorted(models)

    def storage_failed(self, error: Exception) -> None:
        self.storage.append(error)

    def counts(self) -> Counter[str]:
        return Counter(phase for phase, _ in self.phases)


class WritingComfy(FakeComfy):
    """Writes each prompt's image where ComfyUI would, so that it can be stored."""

    def __init__(self, name: str, output_dir: Path) -> None:
        super().__init__(name)
        self.output_dir = output_dir

    async def _run(self, prompt: _Prompt) -> None:
        for node in prompt.graph.values():
            prefix = node.get("inputs", {}).get("filename_prefix")
            if isinstance(prefix, str):
                folder, _, stem = prefix.rpartition("/")
                target = self.output_dir / folder / f"{stem}_00001_.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"\x89PNG\r\n\x1a\nfake")
        await super()._run(prompt)


def save(prefix: str = "cat") -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["1", 0]}}


def checkpoint(name: str) -> dict[str, Any]:
    return {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}


def run(
    tmp_path: Path,
    body: Any,
    *,
    storage: MemoryStorage | None = None,
    instances: int = 2,
) -> Recorder:
    watch = Recorder()

    async def main() -> None:
        store = MemoryJobStore()
        output_dir = tmp_path / "output"
        fakes = [WritingComfy(f"i{i}", output_dir) for i in range(instances)]
        by_url = {f"http://127.0.0.1:{9000 + i}": fake for i, fake in enumerate(fakes)}
        publisher = OutputPublisher(output_dir, storage or MemoryStorage(), backoff_s=0.01)
        dispatcher = Dispatcher(
            store,
            DispatcherSettings(lease_s=5, poll_s=0.02, cancel_poll_s=0.01),
            make_client=lambda url: by_url[url].client(url),
            make_events=lambda url, cid: by_url[url].events(url, cid),
            worker="w1",
            publisher=publisher,
            watch=watch,
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
                while not all(fake.sockets for fake in fakes):  # every lane hears its instance
                    await asyncio.sleep(0.01)
                await body(store, dispatcher)
        finally:
            await dispatcher.stop()
            for fake in fakes:
                fake.kill()

    asyncio.run(main())
    return watch


async def until_ended(store: MemoryJobStore, ids: list[str]) -> None:
    while not all([(await store.get(i)).terminal for i in ids]):
        await asyncio.sleep(0.01)


def test_each_attempt_reports_its_phases_whatever_its_end(tmp_path: Path) -> None:
    empty = {"class_type": "EmptyImage", "inputs": {}}
    sleep = {"class_type": "FleetSleep", "inputs": {"seconds": 2.0}}
    fail = {"class_type": "FleetFail", "inputs": {"message": "no"}}

    async def body(store: MemoryJobStore, dispatcher: Dispatcher) -> None:
        for i in range(4):
            await store.enqueue(NewJob(f"ok{i}", {"1": empty, "9": save()}))
        await store.enqueue(NewJob("bad", {"1": fail}))
        await store.enqueue(NewJob("slow", {"1": sleep, "9": save()}))
        dispatcher.notify()
        while (await store.get("slow")).status is not JobStatus.RUNNING:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # it is running in ComfyUI now
        await store.cancel("slow")
        await until_ended(store, [f"ok{i}" for i in range(4)] + ["bad", "slow"])
        statuses = [(await store.get(i)).status for i in ("ok0", "bad", "slow")]
        assert statuses == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
        await dispatcher.drain(5)

    watch = run(tmp_path, body)
    # Six claims, six prompts ComfyUI started and ended (the cancelled one too), four stored.
    assert watch.counts() == {"queued": 6, "waiting": 6, "running": 6, "storing": 4}
    assert all(seconds >= 0 for _, seconds in watch.phases)
    slow_run = max(seconds for phase, seconds in watch.phases if phase == "running")
    # The cancelled job ran until its cancel (0.2 s after its claim, its start a little after
    # that), not for its 2 s.
    assert 0.1 <= slow_run < 1.5
    assert watch.loads == [] and watch.storage == []


def test_a_failing_output_store_is_counted_and_the_attempt_retried(tmp_path: Path) -> None:
    storage = MemoryStorage()
    storage.fail = StorageUnavailable("store down on purpose")

    async def body(store: MemoryJobStore, dispatcher: Dispatcher) -> None:
        graph = {"1": {"class_type": "EmptyImage", "inputs": {}}, "9": save()}
        await store.enqueue(NewJob("j", graph, max_attempts=2))
        dispatcher.notify()
        await until_ended(store, ["j"])
        job = await store.get("j")
        assert job.status is JobStatus.FAILED and job.error is not None
        assert job.error["code"] == "storage_unavailable"

    watch = run(tmp_path, body, storage=storage, instances=1)
    assert [type(e) for e in watch.storage] == [StorageUnavailable, StorageUnavailable]
    assert watch.counts() == {"queued": 2, "waiting": 2, "running": 2, "storing": 2}


def test_a_model_switch_is_a_load_and_the_same_model_again_is_not(tmp_path: Path) -> None:
    async def body(store: MemoryJobStore, dispatcher: Dispatcher) -> None:
        for i, name in enumerate(["a.safetensors", "a.safetensors", "b.safetensors"]):
            graph = {"1": checkpoint(name), "9": save(f"p{i}")}
            models = (f"checkpoints/{name}",)
            await store.enqueue(NewJob(f"m{i}", graph, models=models), now=100.0 + i)
            dispatcher.notify()
            await until_ended(store, [f"m{i}"])

    watch = run(tmp_path, body, instances=1)
    assert watch.loads == ["checkpoints/a.safetensors", "checkpoints/b.safetensors"]


def test_a_job_cancelled_in_comfyuis_queue_only_waited(tmp_path: Path) -> None:
    sleep = {"class_type": "FleetSleep", "inputs": {"seconds": 0.6}}

    async def body(store: MemoryJobStore, dispatcher: Dispatcher) -> None:
        await store.enqueue(NewJob("first", {"1": sleep, "9": save()}), now=1.0)
        await store.enqueue(NewJob("second", {"1": sleep, "9": save()}), now=2.0)
        dispatcher.notify()
        while (await store.get("second")).status is not JobStatus.RUNNING:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # sent, behind the first in the instance's queue
        await store.cancel("second")
        await until_ended(store, ["first", "second"])
        assert (await store.get("first")).status is JobStatus.SUCCEEDED
        await dispatcher.drain(5)

    watch = run(tmp_path, body, instances=1)
    assert watch.counts() == {"queued": 2, "waiting": 2, "running": 1, "storing": 1}
    first_run = next(seconds for phase, seconds in watch.phases if phase == "running")
    assert first_run >= 0.5
