"""The fleet registry contract on a real PostgreSQL, and what only a shared server shows: two
processes' registry objects see each other's reports, and race for a lease with one winner."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from comfyfleet.jobs import JobStoreError, PostgresJobStore, PostgresRegistry, Registry
from tests.registry_contract import *  # noqa: F403  (the contract's tests, collected here)
from tests.registry_contract import agent, instance

RESET = "TRUNCATE fleet_agents, fleet_instances, fleet_schemas, preview_frames, fleet_leases;"


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RESET.encode())


async def open_registry(url: str) -> PostgresRegistry:
    store = await PostgresJobStore.open(url)  # migrates
    await store.close()
    return await PostgresRegistry.open(url)


@pytest.fixture
def registry(postgres: str, loop: asyncio.Runner) -> Iterator[Registry]:
    opened = loop.run(open_registry(postgres))
    reset(postgres)
    yield opened
    loop.run(opened.close())


def test_two_processes_see_each_others_reports_and_race_for_one_lease(
    postgres: str, loop: asyncio.Runner
) -> None:
    first = loop.run(open_registry(postgres))
    second = loop.run(open_registry(postgres))
    reset(postgres)

    async def scenario() -> None:
        await first.report(agent("a"), [instance(0, "a"), instance(1, "a")])
        await second.report(agent("b"), [instance(0, "b")])
        for each in (first, second):
            fleet = await each.fleet(timeout_s=10)
            assert fleet.alive == {"a", "b"}
            assert len(fleet.serving()) == 3
        wins = await asyncio.gather(
            *(
                r.lead("webhooks", f"holder-{i % 2}", ttl_s=30)
                for i, r in enumerate([first, second] * 5)
            )
        )
        assert sum(wins) == 5  # one of them holds it: every call of its own says so
        holders = {f"holder-{i % 2}" for i, won in enumerate(wins) if won}
        assert len(holders) == 1

    try:
        loop.run(scenario())
    finally:
        loop.run(first.close())
        loop.run(second.close())


def test_a_database_without_the_tables_is_refused_in_one_line(postgres: str) -> None:
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(b"CREATE SCHEMA IF NOT EXISTS empty_schema")
    url = postgres + "?options=-csearch_path%3Dempty_schema"
    with pytest.raises(JobStoreError, match="no fleet registry tables"):
        asyncio.run(PostgresRegistry.open(url))
