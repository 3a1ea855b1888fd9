"""The job store contract (`tests/job_store_contract.py`) on the in-process backends, memory and
SQLite; the PostgreSQL tier runs the same tests against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.jobs import Job, JobStatus, JobStore, MemoryJobStore, SqliteJobStore
from tests.job_store_contract import *  # noqa: F403  (the contract's tests, collected here)
from tests.job_store_contract import run
from tests.job_store_routing_contract import *  # noqa: F403  (routing's part of it)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    opened: JobStore
    if request.param == "memory":
        opened = MemoryJobStore()
    else:
        opened = SqliteJobStore.open(tmp_path / "jobs.db")
    yield opened
    run(opened.close())


def test_jobs_compare_and_serialise_as_plain_data() -> None:
    job = Job(
        id="a",
        workflow={},
        priority=0,
        status=JobStatus.FAILED,
        attempts=1,
        max_attempts=1,
        created_at=1.0,
        queued_at=1.0,
        started_at=2.0,
        finished_at=3.0,
        worker=None,
        lease_until=None,
        instance=0,
        prompt_id="p",
        progress=None,
        outputs=[],
        error={"code": "x"},
        cancel_requested=False,
        request_hash="",
        seq=1,
    )
    assert job.terminal
    data = job.to_dict()
    assert data["status"] == "failed" and type(data["status"]) is str
    assert json.loads(json.dumps(data)) == data
