"""The store contract for routing: which job a claim takes given the claiming instance's models
(affinity) and each key's running limit. Collected next to `job_store_contract` by each tier,
so memory, SQLite and PostgreSQL order claims exactly alike (`_routing.best_claim` is the
reference the SQL queries implement).
"""

from __future__ import annotations

import asyncio
from typing import Any

from comfyfleet.jobs import CLAIM_WINDOW, Affinity, JobStore, NewJob
from tests.event_loop import run

A, B, C = "checkpoints/a.safetensors", "checkpoints/b.safetensors", "loras/c.safetensors"
GRAPH = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64}}}


def job(job_id: str, *models: str, **kwargs: Any) -> NewJob:
    return NewJob(id=job_id, workflow=GRAPH, models=models, **kwargs)


def holding(
    *loaded: str,
    on_disk: tuple[str, ...] = (),
    delay: float | None = 60.0,
    may_switch: bool = True,
) -> Affinity:
    return Affinity(frozenset(loaded), frozenset(on_disk), delay, may_switch)


async def order(store: JobStore, affinity: Affinity | None, *, now: float) -> list[str]:
    """The ids successive claims take, each with the same affinity."""
    taken = []
    while (claimed := await store.claim("w", lease_s=60, now=now, affinity=affinity)) is not None:
        taken.append(claimed.id)
    return taken


def test_models_and_limit_travel_with_the_job(store: JobStore) -> None:
    async def scenario() -> None:
        stored, _ = await store.enqueue(job("j", A, C, owner="k", max_running=2), now=1.0)
        assert stored.models == (A, C) and stored.max_running == 2
        assert await store.get("j") == stored
        claimed = await store.claim("w", lease_s=10, now=2.0)
        assert claimed is not None and claimed.models == (A, C) and claimed.max_running == 2

    run(scenario())


def test_without_affinity_claims_keep_the_plain_order(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(job("old-a", A), now=1.0)
        await store.enqueue(job("none"), now=2.0)
        await store.enqueue(job("new-b", B), now=3.0)
        assert await order(store, None, now=10.0) == ["old-a", "none", "new-b"]

    run(scenario())


def test_affinity_beats_age_within_the_bound(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(job("a-1", A), now=100.0)
        await store.enqueue(job("b-1", B), now=101.0)
        await store.enqueue(job("b-2", B, C), now=102.0)  # one shared model is enough
        await store.enqueue(job("a-2", A), now=103.0)
        assert await order(store, holding(B), now=110.0) == ["b-1", "b-2", "a-1", "a-2"]

    run(scenario())


def test_loaded_beats_on_disk_which_beats_a_download(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(job("elsewhere", C), now=100.0)
        await store.enqueue(job("on-disk", B), now=101.0)
        await store.enqueue(job("loaded", A), now=102.0)
        await store.enqueue(job("no-models"), now=103.0)
        affinity = holding(A, on_disk=(A, B))
        got = await order(store, affinity, now=110.0)
        assert got == ["loaded", "no-models", "on-disk", "elsewhere"]

    run(scenario())


def test_a_claim_behind_running_work_takes_only_jobs_that_need_no_switch(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(job("on-disk", B), now=100.0)
        await store.enqueue(job("download", C), now=101.0)
        await store.enqueue(job("loaded", A), now=102.0)
        await store.enqueue(job("no-models"), now=103.0)
        pipelined = holding(A, on_disk=(B,), may_switch=False)
        assert await order(store, pipelined, now=110.0) == ["loaded", "no-models"]
        # The jobs that need a switch stay queued for an instance that is free: a past-due
        # one counts as needing none (the bound holds behind running work too).
        assert await order(store, pipelined, now=160.5) == ["on-disk"]
        assert await order(store, holding(A), now=110.0) == ["download"]

    run(scenario())


def test_priority_beats_affinity(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(job("loaded", A), now=100.0)
        await store.enqueue(job("urgent", B, priority=5), now=101.0)
        assert await order(store, holding(A), now=110.0) == ["urgent", "loaded"]

    run(scenario())


def test_the_oldest_job_past_the_bound_is_taken_regardless(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(job("waited-b", B), now=100.0)
        await store.enqueue(job("waited-c", C), now=101.0)
        await store.enqueue(job("fresh-a", A), now=150.0)
        # At 165 the first two waited past the 60 s bound: oldest first, then affinity.
        affinity = holding(A, delay=60.0)
        assert await order(store, affinity, now=165.0) == ["waited-b", "waited-c", "fresh-a"]

    run(scenario())


def test_within_the_bound_the_old_job_waits(store: JobStore) -> None:
    async def scenario() -> None:
        await store.enqueue(job("b", B), now=100.0)
        await store.enqueue(job("a", A), now=150.0)
        first = await store.claim("w", lease_s=60, now=159.0, affinity=holding(A, delay=60.0))
        assert first is not None and first.id == "a"
        later = await store.claim("w", lease_s=60, now=161.0, affinity=holding(A, delay=60.0))
        assert later is not None and later.id == "b"

    run(scenario())


def test_affinity_ranks_only_the_window_of_the_queue(store: JobStore) -> None:
    async def scenario() -> None:
        for i in range(CLAIM_WINDOW):
            await store.enqueue(job(f"b-{i:03d}", B), now=100.0 + i)
        await store.enqueue(job("a-behind", A), now=1000.0)
        claimed = await store.claim("w", lease_s=60, now=1001.0, affinity=holding(A))
        assert claimed is not None and claimed.id == "b-000"

    run(scenario())


def test_a_key_at_its_running_limit_waits_and_others_go_first(store: JobStore) -> None:
    async def scenario() -> None:
        for i in range(3):
            await store.enqueue(job(f"greedy-{i}", owner="greedy", max_running=2), now=1.0 + i)
        await store.enqueue(job("other", owner="other", max_running=2), now=10.0)
        await store.enqueue(job("anonymous"), now=11.0)
        assert await order(store, None, now=20.0) == ["greedy-0", "greedy-1", "other", "anonymous"]
        done = await store.complete("greedy-0", "w", [], now=21.0)
        assert done is not None
        third = await store.claim("w", lease_s=60, now=22.0)
        assert third is not None and third.id == "greedy-2"

    run(scenario())


def test_a_flood_at_its_limit_does_not_hide_other_keys_jobs(store: JobStore) -> None:
    async def scenario() -> None:
        for i in range(CLAIM_WINDOW + 5):
            await store.enqueue(job(f"flood-{i:03d}", owner="f", max_running=1), now=1.0 + i)
        await store.enqueue(job("small", owner="s", max_running=1), now=500.0)
        first = await store.claim("w", lease_s=60, now=600.0)
        assert first is not None and first.id == "flood-000"
        second = await store.claim("w", lease_s=60, now=600.0)
        assert second is not None and second.id == "small"
        assert await store.claim("w", lease_s=60, now=600.0) is None

    run(scenario())


def test_racing_claimers_never_pass_a_keys_limit(store: JobStore) -> None:
    async def scenario() -> None:
        for i in range(10):
            await store.enqueue(job(f"k-{i}", owner="k", max_running=3), now=1.0 + i)
        claims = await asyncio.gather(
            *(store.claim(f"w{i}", lease_s=60, now=20.0) for i in range(8))
        )
        assert len([c for c in claims if c is not None]) == 3

    run(scenario())


def test_claimers_at_once_each_take_the_job_their_models_rank_first(store: JobStore) -> None:
    async def scenario() -> None:
        for i, (job_id, models) in enumerate(
            [("a-1", (A,)), ("b-1", (B,)), ("a-2", (A,)), ("plain", ())]
        ):
            await store.enqueue(job(job_id, *models), now=1.0 + i)
        claims = await asyncio.gather(
            store.claim("w1", lease_s=60, now=10.0, affinity=holding(A)),
            store.claim("w2", lease_s=60, now=10.0, affinity=holding(B)),
            store.claim("w3", lease_s=60, now=10.0, affinity=holding(A)),
            store.claim("w4", lease_s=60, now=10.0),
        )
        assert [(c.id, c.worker) if c else None for c in claims] == [
            ("a-1", "w1"),
            ("b-1", "w2"),
            ("a-2", "w3"),
            ("plain", "w4"),
        ]

    run(scenario())


def test_claimers_at_once_past_a_keys_limit_take_other_keys_jobs(store: JobStore) -> None:
    async def scenario() -> None:
        for i in range(4):
            await store.enqueue(job(f"k-{i}", owner="k", max_running=2), now=1.0 + i)
        await store.enqueue(job("other", owner="o", max_running=2), now=9.0)
        claims = await asyncio.gather(
            *(store.claim(f"w{i}", lease_s=60, now=20.0) for i in range(4))
        )
        assert sorted(c.id for c in claims if c is not None) == ["k-0", "k-1", "other"]
        assert (await store.claim("w", lease_s=60, now=20.0)) is None

    run(scenario())
