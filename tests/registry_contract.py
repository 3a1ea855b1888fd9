"""The fleet registry contract: what gateways and agents rely on, whatever the backend.

Not collected by itself: `tests/unit/test_registry.py` runs it on memory and SQLite,
`tests/integration/test_registry_postgres.py` on a real PostgreSQL, each with a `registry`
fixture of its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from comfyfleet.jobs import (
    AgentRecord,
    InstanceRecord,
    NodeSchemas,
    Registry,
    StoredFrame,
    digest_of,
)
from tests.event_loop import run

MODELS = {"checkpoints": ["a.safetensors", "b.safetensors"], "loras": ["x.safetensors"]}
INFO: dict[str, Any] = {
    "CLIPTextEncode": {
        "input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}}
    },
    "SaveImage": {"input": {"required": {"filename_prefix": ["STRING", {"default": "x"}]}}},
}


def agent(agent_id: str = "agent-a", **kwargs: Any) -> AgentRecord:
    return AgentRecord(id=agent_id, host="gpu-1", version="1.0", started_at=100.0, **kwargs)


def instance(index: int = 0, agent_id: str = "agent-a", **kwargs: Any) -> InstanceRecord:
    values: dict[str, Any] = {
        "agent": agent_id,
        "index": index,
        "base_url": f"http://127.0.0.1:{8188 + index}",
        "state": "ready",
        "device": "cuda:0",
        "vram_used": 2 * 1024**3,
        "vram_total": 80 * 1024**3,
        "free_slots": 2,
        "models": MODELS,
        "models_digest": digest_of(MODELS),
        "details": {"pid": 42, "restarts": 0},
    }
    return InstanceRecord(**(values | kwargs))


def test_a_report_is_read_back_whole(registry: Registry) -> None:
    async def scenario() -> None:
        await registry.report(agent(), [instance(0), instance(1, state="starting")], now=200.0)
        fleet = await registry.fleet(timeout_s=10, now=205.0)
        assert [a.id for a in fleet.agents] == ["agent-a"]
        assert fleet.agents[0].heartbeat_at == 200.0
        assert fleet.alive == {"agent-a"}
        first, second = fleet.instances
        assert first == replace(instance(0), updated_at=200.0)
        assert second.state == "starting"
        assert [i.index for i in fleet.serving()] == [0]

    run(scenario())


def test_an_agent_silent_past_the_timeout_is_gone_and_serves_nothing(registry: Registry) -> None:
    async def scenario() -> None:
        await registry.report(agent("a"), [instance(0, "a")], now=100.0)
        await registry.report(agent("b"), [instance(0, "b")], now=108.0)
        fleet = await registry.fleet(timeout_s=5, now=110.0)
        assert fleet.alive == {"b"}
        assert [(i.agent, i.index) for i in fleet.serving()] == [("b", 0)]
        listed = fleet.to_dict()["instances"]
        assert [(i["agent"]["id"], i["state"]) for i in listed] == [("a", "gone"), ("b", "ready")]
        await registry.report(agent("a"), [instance(0, "a")], now=111.0)  # back again
        assert (await registry.fleet(timeout_s=5, now=112.0)).alive == {"a", "b"}

    run(scenario())


def test_heartbeats_update_and_drop_instances_the_agent_no_longer_has(registry: Registry) -> None:
    async def scenario() -> None:
        await registry.report(agent(), [instance(0), instance(1)], now=1.0)
        await registry.report(agent(), [instance(1, free_slots=0, state="busy")], now=2.0)
        fleet = await registry.fleet(timeout_s=10, now=3.0)
        assert [(i.index, i.state, i.free_slots, i.updated_at) for i in fleet.instances] == [
            (1, "busy", 0, 2.0)
        ]

    run(scenario())


def test_a_model_list_is_kept_while_its_digest_is_unchanged(registry: Registry) -> None:
    async def scenario() -> None:
        await registry.report(agent(), [instance(0)], now=1.0)
        # Same digest, other list: the stored list stays (what makes heartbeats cheap).
        await registry.report(agent(), [instance(0, models={"checkpoints": []})], now=2.0)
        (kept,) = (await registry.fleet(timeout_s=10, now=2.0)).instances
        assert {k: list(v) for k, v in kept.models.items()} == MODELS
        changed = {"checkpoints": ["c.safetensors"]}
        await registry.report(
            agent(), [instance(0, models=changed, models_digest=digest_of(changed))], now=3.0
        )
        (now_changed,) = (await registry.fleet(timeout_s=10, now=3.0)).instances
        assert {k: list(v) for k, v in now_changed.models.items()} == changed

    run(scenario())


def test_leaving_removes_the_agent_and_its_instances(registry: Registry) -> None:
    async def scenario() -> None:
        await registry.report(agent("a"), [instance(0, "a")], now=1.0)
        await registry.report(agent("b"), [instance(0, "b")], now=1.0)
        await registry.leave("a")
        fleet = await registry.fleet(timeout_s=10, now=2.0)
        assert [a.id for a in fleet.agents] == ["b"]
        assert [i.agent for i in fleet.instances] == ["b"]

    run(scenario())


def test_node_schemas_are_stored_once_per_digest(registry: Registry) -> None:
    schemas = NodeSchemas.from_object_info(INFO)
    assert schemas.classes == {"CLIPTextEncode", "SaveImage"}
    assert schemas.free_text == {("CLIPTextEncode", "text")}

    async def scenario() -> None:
        assert await registry.schemas([schemas.digest]) == {}
        await registry.put_schemas(schemas)
        await registry.put_schemas(schemas)  # again: nothing changes
        assert await registry.schemas([schemas.digest, "unknown"]) == {schemas.digest: schemas}

    run(scenario())


def test_prune_removes_long_gone_agents_old_frames_and_unused_schemas(registry: Registry) -> None:
    used = NodeSchemas.from_object_info(INFO)
    unused = NodeSchemas(frozenset({"Other"}), frozenset())

    async def scenario() -> None:
        await registry.put_schemas(used)
        await registry.put_schemas(unused)
        await registry.report(agent("old"), [instance(0, "old")], now=10.0)
        await registry.report(
            agent("new"), [instance(0, "new", schema_digest=used.digest)], now=90.0
        )
        await registry.put_preview(StoredFrame("j1", "w", 1, "jpeg", b"old", 10.0))
        await registry.put_preview(StoredFrame("j2", "w", 1, "jpeg", b"new", 95.0))
        await registry.put_preview(StoredFrame("j3", "w", 1, "jpeg", b"mid", 60.0))
        assert await registry.prune(older_than=50.0, frames_before=70.0) == 1
        fleet = await registry.fleet(timeout_s=1000, now=100.0)
        assert [a.id for a in fleet.agents] == ["new"]
        assert [i.agent for i in fleet.instances] == ["new"]
        assert set(await registry.schemas([used.digest, unused.digest])) == {used.digest}
        frames = await registry.previews(["j1", "j2"], since=0.0)
        assert [f.job_id for f in frames] == ["j2"]

    run(scenario())


def test_a_job_keeps_only_its_newest_preview_frame(registry: Registry) -> None:
    async def scenario() -> None:
        await registry.put_preview(StoredFrame("j", "w1", 1, "jpeg", b"\xff\xd8one", 10.0))
        await registry.put_preview(StoredFrame("j", "w1", 2, "png", b"\x89PNGtwo", 11.0))
        (frame,) = await registry.previews(["j", "other"], since=10.5)
        assert frame == StoredFrame("j", "w1", 2, "png", b"\x89PNGtwo", 11.0)
        assert await registry.previews(["j"], since=12.0) == []

    run(scenario())


def test_a_lease_has_one_holder_until_it_expires_or_is_given_up(registry: Registry) -> None:
    async def scenario() -> None:
        assert await registry.lead("webhooks", "a", ttl_s=10, now=100.0)
        assert not await registry.lead("webhooks", "b", ttl_s=10, now=105.0)
        assert await registry.lead("webhooks", "a", ttl_s=10, now=108.0)  # renewed to 118
        assert not await registry.lead("webhooks", "b", ttl_s=10, now=115.0)
        assert await registry.lead("webhooks", "b", ttl_s=10, now=119.0)  # a's expired
        assert not await registry.lead("webhooks", "a", ttl_s=10, now=120.0)
        await registry.resign("webhooks", "a")  # not a's: nothing happens
        assert not await registry.lead("webhooks", "a", ttl_s=10, now=121.0)
        await registry.resign("webhooks", "b")
        assert await registry.lead("webhooks", "a", ttl_s=10, now=122.0)
        assert await registry.lead("other", "b", ttl_s=10, now=122.0)  # leases are by name

    run(scenario())


def test_old_preview_frames_are_pruned_but_a_kept_jobs(registry: Registry) -> None:
    async def scenario() -> None:
        await registry.put_preview(StoredFrame("old", "w", 1, "jpeg", b"12345", 10.0))
        await registry.put_preview(StoredFrame("live", "w", 1, "jpeg", b"123", 10.0))
        await registry.put_preview(StoredFrame("new", "w", 1, "png", b"1234567", 30.0))
        assert await registry.prune_previews(20.0, keep=["live"], dry_run=True) == (1, 5)
        assert await registry.prune_previews(31.0, dry_run=True) == (3, 15)
        assert await registry.prune_previews(20.0, keep=["live", "other"]) == (1, 5)
        frames = await registry.previews(["old", "live", "new"], since=0.0)
        assert sorted(f.job_id for f in frames) == ["live", "new"]
        assert await registry.prune_previews(20.0, keep=["live"]) == (0, 0)
        assert await registry.prune_previews(31.0) == (2, 10)
        assert await registry.previews(["old", "live", "new"], since=0.0) == []

    run(scenario())
