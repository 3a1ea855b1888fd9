"""What the gateway shows of the fleet comes from the registry: readiness, the instance list,
the node schemas it checks graphs with, and preview frames stored by agents elsewhere."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from comfyfleet.gateway import NodeTypes, PreviewFeed, Service, create_app
from comfyfleet.gateway._previews import PreviewHub
from comfyfleet.jobs import MemoryJobStore, MemoryRegistry, NodeSchemas, StoredFrame
from comfyfleet.roles._report import Reporter, _Probe, new_agent
from comfyfleet.supervise import InstanceStatus, State
from tests.registry_contract import INFO, agent, instance


def _get(service: Service, path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get(path)

    return asyncio.run(call())


def test_ready_and_instances_read_the_registry(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    service = Service(store=MemoryJobStore(), output_dir=tmp_path, registry=registry)
    assert _get(service, "/ready").status_code == 503  # nothing registered yet
    asyncio.run(registry.report(agent("a"), [instance(0, "a"), instance(1, "a", state="starting")]))
    ready = _get(service, "/ready")
    assert ready.status_code == 200 and ready.json()["instances_serving"] == 1
    listed = _get(service, "/v1/instances").json()
    assert [a["id"] for a in listed["agents"]] == ["a"]
    first = listed["instances"][0]
    assert (first["index"], first["pid"], first["agent"]["id"], first["agent"]["alive"]) == (
        0,
        42,
        "a",
        True,
    )


def test_a_gone_agent_makes_the_gateway_unready(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    service = Service(store=MemoryJobStore(), output_dir=tmp_path, registry=registry)
    asyncio.run(registry.report(agent("a"), [instance(0, "a")], now=1.0))  # long ago
    assert _get(service, "/ready").json()["instances_serving"] == 0
    assert _get(service, "/v1/instances").json()["instances"][0]["state"] == "gone"


def test_node_types_are_the_union_of_the_serving_instances_schemas() -> None:
    other = NodeSchemas(frozenset({"FleetSleep"}), frozenset())
    base = NodeSchemas.from_object_info(INFO)

    async def scenario() -> None:
        registry = MemoryRegistry()
        types = NodeTypes(registry, refresh_s=0)
        assert await types.known({"SaveImage"}) is None  # nobody registered: skip the check
        assert types.free_text("Anything", "prompt")  # by name meanwhile
        await registry.put_schemas(base)
        await registry.put_schemas(other)
        await registry.report(
            agent("a"),
            [
                instance(0, "a", schema_digest=base.digest),
                instance(1, "a", schema_digest=other.digest),
            ],
        )
        assert await types.known({"SaveImage"}) == {"CLIPTextEncode", "SaveImage", "FleetSleep"}
        assert types.free_text("CLIPTextEncode", "text")
        assert not types.free_text("SaveImage", "filename_prefix")

    asyncio.run(scenario())


def test_the_feed_passes_frames_of_watched_jobs_once_and_skips_local_ones() -> None:
    async def scenario() -> None:
        registry = MemoryRegistry()
        hub = PreviewHub(queue_size=4)
        feed = PreviewFeed(registry, hub, local_workers=["me"])
        await registry.put_preview(StoredFrame("j", "elsewhere", 1, "jpeg", b"one", time.time()))
        await registry.put_preview(StoredFrame("mine", "me", 1, "jpeg", b"local", time.time()))
        assert await feed.poll() == 0  # nobody watches
        async with hub.subscribe("j") as frames, hub.subscribe("mine"):
            assert await feed.poll() == 1
            assert await feed.poll() == 0  # the same frame is not passed twice
            await registry.put_preview(StoredFrame("j", "elsewhere", 2, "png", b"two", time.time()))
            assert await feed.poll() == 1
            assert [(await frames.get()).data, (await frames.get()).data] == [b"one", b"two"]

    asyncio.run(scenario())


def test_the_reporter_registers_the_supervisors_instances_with_slots_and_models() -> None:
    statuses = [
        InstanceStatus(0, State.READY, 11, 8188, "cpu", 1.0, 2.0, 0, None, None, ""),
        InstanceStatus(1, State.BACKOFF, None, 8189, "cpu", None, None, 3, None, None, "exit 1"),
    ]

    async def scenario() -> None:
        registry = MemoryRegistry()
        reporter = Reporter(
            registry,
            new_agent("agent-x"),
            instances=lambda: statuses,
            free_slots=lambda index: 2,
            base_url=lambda port: f"http://127.0.0.1:{port}",
            list_models=lambda: {"checkpoints": ["a.safetensors"]},
        )
        reporter._probes[0] = reporter._probes[1] = _probed()  # no ComfyUI here to ask
        await reporter.report_once()
        fleet = await registry.fleet(timeout_s=10)
        first, second = fleet.instances
        assert (first.agent, first.state, first.free_slots, first.details["port"]) == (
            "agent-x",
            "ready",
            2,
            8188,
        )
        assert first.models == {"checkpoints": ["a.safetensors"]} and first.models_digest
        assert (second.state, second.free_slots, second.details["reason"]) == (
            "backoff",
            0,
            "exit 1",
        )
        await reporter.leave()
        assert (await registry.fleet(timeout_s=10)).instances == ()

    asyncio.run(scenario())


def _probed() -> _Probe:
    """Schemas known and VRAM fresh for ever: nothing to ask an instance."""
    return _Probe(pid=11, schema_digest="d", vram_at=float("inf"))
