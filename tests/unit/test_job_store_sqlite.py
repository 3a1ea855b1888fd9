"""The SQLite store's own promises: kill -9 loses nothing, processes sharing the file never claim
the same job, migrations run once, and store URLs mean what the settings docs say."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from comfyfleet.db import load_migrations, load_queries, split_statements
from comfyfleet.jobs import (
    JobNotFound,
    JobStatus,
    JobStoreError,
    MemoryJobStore,
    NewJob,
    SqliteJobStore,
    open_store,
    publish_all,
)

T = TypeVar("T")

CHILD = """
import asyncio, sys
from pathlib import Path
from comfyfleet.jobs import NewJob, SqliteJobStore

async def main() -> None:
    store = SqliteJobStore.open(Path(sys.argv[1]))
    for i in range(30):
        await store.enqueue(NewJob(id=f"job-{i:02d}", workflow={"i": i}), now=1000.0 + i)
    job = await store.claim("doomed", lease_s=30, now=2000.0)
    print("ready", job.id, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""

CHILD_STREAM = """
import asyncio, sys
from pathlib import Path
from comfyfleet.jobs import NewJob, SqliteJobStore

async def main() -> None:
    store = SqliteJobStore.open(Path(sys.argv[1]))
    i = 0
    while True:
        await store.enqueue(NewJob(id=f"job-{i}", workflow={"i": i}))
        await store.publish(f"job-{i}", "progress", {"value": i})
        print(i, flush=True)
        i += 1

asyncio.run(main())
"""


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _child(script: str, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_loses_no_job_and_the_lease_brings_the_claimed_one_back(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with _child(CHILD, db) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), proc.stderr.read()
        _kill(proc)
    claimed_id = line.split()[1]

    async def scenario() -> None:
        store = SqliteJobStore.open(db)
        try:
            assert await store.count(JobStatus.QUEUED) == 29
            assert await store.count(JobStatus.RUNNING) == 1
            jobs, _ = await store.list_jobs(limit=100)
            assert len(jobs) == 30
            running = await store.get(claimed_id)
            assert (running.status, running.worker, running.attempts) == (
                JobStatus.RUNNING,
                "doomed",
                1,
            )
            assert running.lease_until is not None
            assert await store.release_expired(now=running.lease_until - 1) == []
            assert await store.release_expired(now=running.lease_until + 1) == [claimed_id]
            assert await store.count(JobStatus.QUEUED) == 30
            assert (await store.get(claimed_id)).attempts == 1
            claimed = []
            while (job := await store.claim("heir", lease_s=30)) is not None:
                claimed.append(job)
            assert len(claimed) == 30
            attempts = {job.id: job.attempts for job in claimed}
            assert attempts.pop(claimed_id) == 2
            assert set(attempts.values()) == {1}
        finally:
            await store.close()

    run(scenario())


def test_kill_9_mid_stream_keeps_every_committed_change(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with _child(CHILD_STREAM, db) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        printed = [proc.stdout.readline() for _ in range(200)]
        assert printed[-1].strip() == "199", proc.stderr.read()
        _kill(proc)

    async def scenario() -> None:
        store = SqliteJobStore.open(db)
        try:
            assert store.migrated == []
            jobs, _ = await store.list_jobs(limit=100_000)
            assert len(jobs) >= 200  # every acknowledged enqueue survived, maybe a few more
            for job in jobs:
                assert (await store.events(job.id))[0].data == {"status": "queued"}
            for i in range(200):
                assert [e.kind for e in await store.events(f"job-{i}")] == ["status", "progress"]
        finally:
            await store.close()
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()

    run(scenario())


def test_two_connections_racing_never_claim_the_same_job(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"

    async def setup() -> None:
        store = SqliteJobStore.open(db)
        for i in range(200):
            await store.enqueue(NewJob(id=f"job-{i:03d}", workflow={}))
        await store.close()

    run(setup())
    claimed: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    async def drain(worker: int) -> None:
        store = SqliteJobStore.open(db)
        try:
            start.wait(timeout=10)
            while (job := await store.claim(f"w{worker}", lease_s=30)) is not None:
                claimed[worker].append(job.id)
                time.sleep(0.001)  # between claims, as a real worker: the others get their turn
        finally:
            await store.close()

    threads = [threading.Thread(target=run, args=(drain(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    everything = [job_id for ids in claimed for job_id in ids]
    assert sorted(everything) == [f"job-{i:03d}" for i in range(200)]
    assert sum(1 for ids in claimed if ids) >= 2  # they really did share the work


def test_migrations_run_once(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "dir" / "jobs.db"
    first = SqliteJobStore.open(db)
    run(first.close())
    known = [version for version, _, _ in load_migrations("comfyfleet.jobs")]
    assert first.migrated == known == sorted(known)
    assert known[0] == 1
    again = SqliteJobStore.open(db)
    run(again.close())
    assert again.migrated == []
    with sqlite3.connect(db) as conn:
        applied = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
        assert [version for version, _ in applied] == known
        assert applied[0] == (1, "jobs")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_upgrading_a_store_gives_old_jobs_no_owner_and_lists_by_owner_through_an_index(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    queries = load_queries("comfyfleet.jobs")
    with sqlite3.connect(db) as conn:  # a store as the release before owners left it
        conn.execute(queries["create_migrations_table"])
        for version, name, script in load_migrations("comfyfleet.jobs"):
            if version >= 4:
                break
            for statement in split_statements(script):
                conn.execute(statement)
            record = {"version": version, "name": name, "applied_at": 0.0}
            conn.execute(queries["record_migration"], record)
        conn.execute(
            "INSERT INTO jobs (id, workflow, priority, status, attempts, max_attempts, created_at,"
            " queued_at, outputs, cancel_requested, request_hash)"
            " VALUES ('old', '{}', 0, 'queued', 0, 3, 1.0, 1.0, '[]', 0, '')"
        )
    conn.close()

    async def scenario() -> None:
        store = SqliteJobStore.open(db)
        try:
            assert store.migrated[0] == 4  # and any newer ones
            assert (await store.get("old")).owner is None
            await store.enqueue(NewJob(id="new", workflow={}, owner="key-a"))
            assert [j.id for j in (await store.list_jobs(owner="key-a"))[0]] == ["new"]
            assert [j.id for j in (await store.list_jobs())[0]] == ["new", "old"]
        finally:
            await store.close()

    run(scenario())
    with sqlite3.connect(db) as conn:
        for name in ("list_owned_jobs", "list_owned_jobs_by_status"):
            params = {"owner": "key-a", "status": "queued", "before": 10, "limit": 5}
            plan = conn.execute("EXPLAIN QUERY PLAN " + queries[name], params).fetchall()
            assert "USING INDEX jobs_owner" in " ".join(str(row[-1]) for row in plan), plan
    conn.close()


def test_a_newer_schema_or_a_foreign_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    run(SqliteJobStore.open(db).close())
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 0)")
    conn.close()
    with pytest.raises(JobStoreError, match="schema version 9999"):
        SqliteJobStore.open(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(JobStoreError, match="cannot open the job store") as info:
        SqliteJobStore.open(junk)
    assert info.value.hint


def test_every_named_query_is_one_statement() -> None:
    queries = load_queries("comfyfleet.jobs")
    assert {"claim", "next_queued", "insert_job", "update_job"} - set(queries) == {"claim"}
    for name, sql in queries.items():
        assert len(split_statements(sql)) == (4 if name == "pragmas" else 1), name


def test_split_statements_respects_strings_comments_and_triggers() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
    END;
    INSERT INTO t VALUES ('e')
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[1].endswith("END;")
    with pytest.raises(ValueError, match="unterminated"):
        split_statements("INSERT INTO t VALUES ('never closed);")


# --- open_store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "relative"),
    [
        ("sqlite://", "jobs.db"),
        ("sqlite:///", "jobs.db"),
        ("sqlite:///queue/mine.db", "queue/mine.db"),
    ],
)
def test_open_store_sqlite_urls(tmp_path: Path, url: str, relative: str) -> None:
    store = run(open_store(url, default_dir=tmp_path / "state"))
    run(store.close())
    assert isinstance(store, SqliteJobStore)
    assert store.path == tmp_path / "state" / relative
    assert store.path.exists()


def test_open_store_absolute_path_and_memory(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "jobs.db"
    store = run(open_store(f"sqlite:///{absolute}", default_dir=tmp_path / "state"))
    run(store.close())
    assert isinstance(store, SqliteJobStore) and store.path == absolute
    assert isinstance(run(open_store("memory://", default_dir=tmp_path)), MemoryJobStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost:6379/0", "the redis store is not available yet"),
        ("mysql://db/jobs", "unknown job store URL 'mysql://db/jobs'"),
        ("jobs.db", "unknown job store URL 'jobs.db'"),
        ("sqlite:///:memory:", "in-memory SQLite"),
    ],
)
def test_open_store_refuses_what_it_cannot_open(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(JobStoreError) as info:
        run(open_store(url, default_dir=tmp_path))
    assert message in info.value.message
    assert info.value.hint and "memory://" in info.value.hint


def test_a_batch_of_events_is_one_transaction_all_or_none(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteJobStore.open(tmp_path / "jobs.db")
        try:
            await store.enqueue(NewJob("a", {"1": {"class_type": "X", "inputs": {}}}))
            before = await store.latest_event_seq()
            commits = []
            store._db().set_trace_callback(
                lambda sql: commits.append(sql) if sql.strip(" ;").upper() == "COMMIT" else None
            )
            await publish_all(store, [("a", "started", {}), ("a", "executing", {"node": "1"})])
            assert len(commits) == 1
            with pytest.raises(JobNotFound, match="'a, gone'"):
                await publish_all(store, [("a", "executed", {}), ("gone", "executed", {})])
            kinds = [e.kind for e in await store.events_since(before)]
            assert kinds == ["started", "executing"]  # nothing of the refused batch
        finally:
            await store.close()

    run(scenario())
