"""A lane's progress events go to the store in batches: what arrives within the window in one
transaction, and whatever is pending when the attempt ends before its end (SQLite store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from comfyfleet.comfy import ComfyMessage
from comfyfleet.jobs import NewJob, SqliteJobStore
from comfyfleet.jobs._flight import InFlight
from comfyfleet.jobs._progress_events import ProgressEvents

GRAPH = {"1": {"class_type": "X", "inputs": {}}}


def _message(kind: str, **data: object) -> ComfyMessage:
    return ComfyMessage(kind, {"prompt_id": "p", **data}, "p")


async def _running(store: SqliteJobStore) -> tuple[InFlight, list[str], int]:
    """A claimed job's flight, the list every COMMIT from now on is added to, and the log's end."""
    await store.enqueue(NewJob("a", GRAPH))
    job = await store.claim("w", lease_s=30, prompt_id="p")
    assert job is not None
    commits: list[str] = []
    store._db().set_trace_callback(
        lambda sql: commits.append(sql) if sql.strip(" ;").upper() == "COMMIT" else None
    )
    return InFlight(job, "p"), commits, await store.latest_event_seq()


def test_messages_within_the_window_are_one_commit_and_flush_stores_the_rest(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store = SqliteJobStore.open(tmp_path / "jobs.db")
        try:
            flight, commits, seq = await _running(store)
            progress = ProgressEvents(store, "w", 0, window_s=0.05)
            assert await progress.tell(flight, _message("execution_start", timestamp=1))
            assert await progress.tell(flight, _message("executing", node="1"))
            output = {"images": [{"filename": "x.png"}]}
            assert await progress.tell(flight, _message("executed", node="1", output=output))
            assert not await progress.tell(flight, _message("execution_success"))
            assert await store.events_since(seq) == []  # still within the window
            await asyncio.sleep(0.2)
            assert [e.kind for e in await store.events_since(seq)] == [
                "started",
                "executing",
                "executed",
            ]
            assert len(commits) == 1
            assert flight.ui_outputs == {"1": output}

            await progress.tell(flight, _message("executing", node="2"))
            await progress.flush()  # the attempt ends: at once, not at the window's end
            assert [e.kind for e in await store.events_since(seq)][-1] == "executing"
            assert len(commits) == 2
            await progress.flush()  # nothing pending: nothing written
            assert len(commits) == 2
            assert not progress.tasks
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_flood_goes_in_bounded_transactions_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteJobStore.open(tmp_path / "jobs.db")
        try:
            flight, commits, seq = await _running(store)
            progress = ProgressEvents(store, "w", 0, window_s=5)
            for node in range(450):  # a graph of thousands of nodes, one window's share
                await progress.tell(flight, _message("executing", node=str(node)))
            await progress.flush()
            stored = await store.events_since(seq, limit=1000)
            assert [e.data["node"] for e in stored] == [str(node) for node in range(450)]
            assert len(commits) == 3  # 200 + 200 + 50
        finally:
            await store.close()

    asyncio.run(scenario())
