"""The fleet registry contract (`tests/registry_contract.py`) on memory and SQLite; the
PostgreSQL tier runs the same tests against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.jobs import (
    JobStoreError,
    MemoryRegistry,
    Registry,
    SqliteJobStore,
    SqliteRegistry,
)
from tests.event_loop import run
from tests.registry_contract import *  # noqa: F403  (the contract's tests, collected here)


@pytest.fixture(params=["memory", "sqlite"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    opened: Registry
    if request.param == "memory":
        opened = MemoryRegistry()
    else:
        store = SqliteJobStore.open(tmp_path / "jobs.db")
        run(store.close())
        opened = SqliteRegistry.open(tmp_path / "jobs.db")
    yield opened
    run(opened.close())


def test_the_sqlite_registry_needs_a_migrated_job_store(tmp_path: Path) -> None:
    with pytest.raises(JobStoreError, match="no job store at"):
        SqliteRegistry.open(tmp_path / "missing.db")
