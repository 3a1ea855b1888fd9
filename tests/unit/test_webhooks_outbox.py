"""The outbox contract (`tests/outbox_contract.py`) on memory and SQLite, and the SQLite outbox's
own promises: it keeps everything across a reopen, needs the job store's tables, and agrees with
the memory one on a random history."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.jobs import SqliteJobStore
from comfyfleet.webhooks import MemoryOutbox, Outbox, OutboxError, SqliteOutbox
from tests.event_loop import run
from tests.outbox_contract import *  # noqa: F403  (the contract's tests, collected here)
from tests.outbox_contract import NOW, new


def sqlite_outbox(tmp_path: Path) -> SqliteOutbox:
    db = tmp_path / "jobs.db"
    run(SqliteJobStore.open(db).close())  # the job store's migrations create the outbox tables
    return SqliteOutbox.open(db)


@pytest.fixture(params=["memory", "sqlite"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    box: Outbox = MemoryOutbox() if request.param == "memory" else sqlite_outbox(tmp_path)
    yield box
    run(box.close())


def test_sqlite_outbox_keeps_everything_across_a_reopen(tmp_path: Path) -> None:
    box = sqlite_outbox(tmp_path)
    run(box.relay(0, 4, [new(2, "a"), new(4, "a")], now=NOW))
    run(box.mark_retry("msg_2", next_at=NOW + 60, status=502, error="bad gateway", now=NOW))
    run(box.close())
    again = SqliteOutbox.open(tmp_path / "jobs.db")
    try:
        assert run(again.relay_cursor()) == 4
        row = run(again.get("msg_2"))
        assert (row.attempts, row.next_attempt_at, row.last_error) == (1, NOW + 60, "bad gateway")
        assert run(again.due(NOW + 60, 10)) == [row]
    finally:
        run(again.close())


def test_sqlite_outbox_needs_the_job_store_tables(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="open the SQLite job store first"):
        SqliteOutbox.open(tmp_path / "missing.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(OutboxError, match="no webhook outbox tables"):
        SqliteOutbox.open(other)
    box = sqlite_outbox(tmp_path)
    run(box.close())
    with pytest.raises(OutboxError, match="closed"):
        run(box.relay_cursor())


def test_the_migration_is_recorded_with_the_job_store(tmp_path: Path) -> None:
    run(sqlite_outbox(tmp_path).close())
    conn = sqlite3.connect(tmp_path / "jobs.db")
    try:
        names = dict(conn.execute("SELECT version, name FROM schema_migrations").fetchall())
        assert names[2] == "webhook_outbox"
        assert conn.execute("SELECT last_event_seq FROM webhook_relay").fetchall() == [(0,)]
    finally:
        conn.close()


def random_history(seed: int = 7) -> list[Callable[[Outbox], Coroutine[Any, Any, Any]]]:
    """Relaying 40 deliveries over three jobs, then 60 random attempts and looks at what is due."""
    rng = random.Random(seed)
    ops: list[Callable[[Outbox], Coroutine[Any, Any, Any]]] = []
    jobs = ["a", "b", "c"]
    batch = [new(i, rng.choice(jobs)) for i in range(1, 41)]
    ops.append(lambda o: o.relay(0, 40, batch, now=NOW))
    for step in range(60):
        t = NOW + step
        choice = rng.randrange(4)
        target = f"msg_{rng.randrange(1, 41)}"
        if choice == 0:
            ops.append(lambda o, d=target, t=t: o.mark_delivered(d, status=200, now=t))
        elif choice == 1:
            ops.append(
                lambda o, d=target, t=t: o.mark_retry(
                    d, next_at=t + 3, status=500, error="e", now=t
                )
            )
        elif choice == 2:
            ops.append(lambda o, d=target, t=t: o.mark_failed(d, status=None, error="f", now=t))
        else:
            ops.append(lambda o, t=t: o.due(t, 50))
    return ops


async def replay(box: Outbox, ops: list[Callable[[Outbox], Coroutine[Any, Any, Any]]]) -> list[Any]:
    """Every answer of `ops` on `box`, then its whole listing; closes it."""
    answers = []
    for op in ops:
        result = await op(box)
        answers.append([d.to_dict() for d in result] if isinstance(result, list) else result)
    answers.append([d.to_dict() for d in (await box.list_deliveries(limit=100))[0]])
    await box.close()
    return answers


def test_both_backends_agree_on_a_random_history(tmp_path: Path) -> None:
    """The same operations give the same answers on both backends (beyond the cases above)."""
    ops = random_history()
    assert run(replay(MemoryOutbox(), ops)) == run(replay(sqlite_outbox(tmp_path), ops))
