"""The durable job store: one SQLite file in WAL mode.

Why it survives `kill -9`: every change is one transaction, committed before the call returns,
and WAL with `synchronous=NORMAL` loses no committed transaction when the process dies (only a
power cut may lose the last few). Why no job is claimed twice: every read-modify-write runs under
`BEGIN IMMEDIATE`, which takes the file's write lock before reading, so two processes sharing the
file queue up (for up to `busy_timeout`) instead of both reading the same queued job.

Calls run synchronously on the event loop's thread. Each is well under a millisecond, and running
a whole transaction without an `await` inside means two coroutines can never interleave in one
connection's transaction, so one connection per store is enough.

All SQL lives in `sql/`: numbered migrations, and `queries.sql` with one named block per query.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from comfyfleet.db import NO_CURSOR, immediate, load_queries, migrate_file, opening
from comfyfleet.jobs import _rules as rules
from comfyfleet.jobs._model import (
    Job,
    JobConflict,
    JobEnding,
    JobEvent,
    JobNotFound,
    JobStatus,
    JobStoreError,
    NewJob,
    QueueFull,
)
from comfyfleet.jobs._options import JobOptions
from comfyfleet.jobs._outputs import JobOutput
from comfyfleet.jobs._progress import JobProgress
from comfyfleet.jobs._routing import Affinity, claim_params
from comfyfleet.jobs._rows import clock as _now
from comfyfleet.jobs._rows import dump as _dump
from comfyfleet.jobs._rows import ending_from_row as _ending
from comfyfleet.jobs._rows import event_from_row as _event
from comfyfleet.jobs._rows import job_from_row as _job
from comfyfleet.jobs._rows import load as _load
from comfyfleet.jobs._rows import mutable_columns as _mutable_columns
from comfyfleet.jobs._sqlite_retention import SqliteRetention
from comfyfleet.jobs._store import (
    EventWaiters,
    Publication,
    wait_for_any_events,
    wait_for_end,
    wait_for_events,
)

JOBS_SQL = "comfyfleet.jobs"
"""The package whose `sql/` folders hold the job store's schema and queries."""


class SqliteJobStore(SqliteRetention):
    """Open with :meth:`open`; `migrated` lists the schema versions that opening applied."""

    def __init__(self, conn: sqlite3.Connection, queries: dict[str, str], path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._q = queries
        self.path = path
        self.migrated: list[int] = []
        self._waiters = EventWaiters()
        self._changed: list[tuple[str, str]] = []  # (job, kind) of the open transaction's events

    @classmethod
    def open(cls, path: Path) -> SqliteJobStore:
        """Open (creating it and its directory if needed) and migrate the store at `path`.

        Synchronous, like every call here: it takes milliseconds, and opening usually happens
        once at startup, before the event loop has anything else to do."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _open_error(path, exc) from exc
        queries = load_queries(JOBS_SQL)
        try:
            with opening(path, queries["pragmas"]) as conn:
                store = cls(conn, queries, path)
                where = f"the job store {path}"
                store.migrated = migrate_file(
                    conn, queries, JOBS_SQL, where=where, error=JobStoreError
                )
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from exc
        return store

    # --- the JobStore protocol ---------------------------------------------------------------
    async def enqueue(
        self, job: NewJob, *, max_queued: int | None = None, now: float | None = None
    ) -> tuple[Job, bool]:
        large = len(job.workflow) > _LARGE_GRAPH
        # A graph of many thousand nodes takes a while to encode: not on the event loop.
        workflow = await asyncio.to_thread(_dump, job.workflow) if large else _dump(job.workflow)
        with self._write() as conn:
            existing = self._find(job.id)
            if existing is not None:
                if not rules.repeats(existing, job):
                    raise JobConflict(job.id)
                return existing, False
            if max_queued is not None and self._count(JobStatus.QUEUED) >= max_queued:
                raise QueueFull(max_queued)
            change = rules.created(job, seq=0, now=_now(now))
            row = {"id": job.id, "workflow": workflow, "priority": job.priority}
            row |= {"max_attempts": job.max_attempts, "created_at": change.job.created_at}
            options = _dump(job.options.to_json())
            row |= {"request_hash": job.request_hash, "options": options, "owner": job.owner}
            row |= {"models": _dump(list(job.models)), "max_running": job.max_running}
            row |= _mutable_columns(change.job)
            seq = conn.execute(self._q["insert_job"], row).lastrowid
            assert seq is not None
            # Hand back what was stored (JSON-normalised), as every later read will; a large
            # graph came from a JSON body, so it is normalised already and not decoded again.
            stored = job.workflow if large else _load(workflow)
            created = replace(
                change.job, seq=seq, workflow=stored, options=JobOptions.from_json(_load(options))
            )
            self._append(job.id, change.kind, change.data, created.created_at)
            return created, True

    async def get(self, job_id: str) -> Job:
        job = self._find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> tuple[list[Job], str | None]:
        rules.check_limit(limit)
        before = rules.cursor_seq(cursor)
        params: dict[str, Any] = {"before": NO_CURSOR if before is None else before}
        params |= {"limit": limit + 1, "status": None if status is None else str(status)}
        params["owner"] = owner
        name = "list_jobs" if owner is None else "list_owned_jobs"
        query = self._q[name if status is None else f"{name}_by_status"]
        rows = self._db().execute(query, params).fetchall()
        return rules.page([_job(row) for row in rows], limit)

    async def count(self, status: JobStatus) -> int:
        return self._count(status)

    async def queue_depths(self) -> dict[int, int]:
        rows = self._db().execute(self._q["queue_depths"]).fetchall()
        return {int(row["priority"]): int(row["n"]) for row in rows}

    async def endings(self, *, since: float, limit: int = 20_000) -> list[JobEnding]:
        rows = self._db().execute(self._q["endings"], {"since": since, "limit": limit})
        return [_ending(row) for row in rows]

    async def queue_position(self, job_id: str) -> int | None:
        row = self._db().execute(self._q["queue_position"], {"id": job_id}).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return None if row[0] is None else int(row[0])

    async def claim(
        self,
        worker: str,
        *,
        lease_s: float,
        now: float | None = None,
        instance: int | None = None,
        prompt_id: str | None = None,
        affinity: Affinity | None = None,
    ) -> Job | None:
        at = _now(now)
        params = claim_params(affinity, now=at)
        params |= {"loaded": _dump(params["loaded"]), "on_disk": _dump(params["on_disk"])}
        with self._write() as conn:
            row = conn.execute(self._q["next_queued"], params).fetchone()
            if row is None:
                return None
            change = rules.claimed(
                _job(row), worker, lease_s=lease_s, now=at, instance=instance, prompt_id=prompt_id
            )
            return self._record(change, at)

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], *, lease_s: float, now: float | None = None
    ) -> list[str]:
        query = self._q["extend_lease"]
        params: dict[str, Any] = {"worker": worker, "lease_until": _now(now) + lease_s}
        with self._write() as conn:
            return [i for i in job_ids if conn.execute(query, params | {"id": i}).rowcount]

    async def set_running_info(
        self,
        job_id: str,
        worker: str,
        *,
        instance: int | None = None,
        prompt_id: str | None = None,
        progress: JobProgress | None = None,
    ) -> bool:
        params = {"id": job_id, "worker": worker, "instance": instance, "prompt_id": prompt_id}
        params |= {"progress": None if progress is None else _dump(progress.to_json())}
        with self._write() as conn:
            return conn.execute(self._q["set_running_info"], params).rowcount > 0

    async def complete(
        self,
        job_id: str,
        worker: str,
        outputs: list[JobOutput],
        *,
        now: float | None = None,
        details: dict[str, Any] | None = None,
        attempt: int | None = None,
    ) -> Job | None:
        rule = partial(rules.completed, outputs=outputs, details=details)
        return self._change_held(job_id, worker, now, rule, attempt)

    async def fail(
        self,
        job_id: str,
        worker: str,
        error: dict[str, Any],
        *,
        retryable: bool,
        now: float | None = None,
        attempt: int | None = None,
    ) -> Job | None:
        rule = partial(rules.failed, error=error, retryable=retryable)
        return self._change_held(job_id, worker, now, rule, attempt)

    async def cancel(self, job_id: str, *, now: float | None = None) -> Job:
        with self._write():
            job = self._find(job_id)
            if job is None:
                raise JobNotFound(job_id)
            at = _now(now)
            change = rules.cancel_requested(job, now=at)
            return job if change is None else self._record(change, at)

    async def fail_queued(
        self, job_id: str, error: dict[str, Any], *, now: float | None = None
    ) -> Job | None:
        with self._write():
            job = self._find(job_id)
            if job is None:
                raise JobNotFound(job_id)
            at = _now(now)
            change = rules.failed_in_queue(job, error, now=at)
            return None if change is None else self._record(change, at)

    async def mark_cancelled(
        self, job_id: str, worker: str, *, now: float | None = None
    ) -> Job | None:
        return self._change_held(job_id, worker, now, rules.cancelled)

    async def release_expired(self, *, now: float | None = None) -> list[str]:
        at = _now(now)
        with self._write() as conn:
            lapsed = [_job(row) for row in conn.execute(self._q["lapsed_leases"], {"now": at})]
            for job in lapsed:
                self._record(rules.expired(job, now=at), at)
            return [job.id for job in lapsed]

    async def publish(
        self, job_id: str, kind: str, data: dict[str, Any], *, now: float | None = None
    ) -> JobEvent:
        try:
            with self._write():  # the events table's foreign key refuses an unknown job
                return self._append(job_id, kind, data, _now(now))
        except sqlite3.IntegrityError as exc:
            raise JobNotFound(job_id) from exc

    async def publish_many(
        self, events: Sequence[Publication], *, now: float | None = None
    ) -> list[JobEvent]:
        """Several events, one commit (see `BatchPublisher`)."""
        at = _now(now)
        try:
            with self._write():
                return [self._append(job_id, kind, data, at) for job_id, kind, data in events]
        except sqlite3.IntegrityError as exc:
            # The foreign key does not say which of the batch's jobs is missing: all are named.
            raise JobNotFound(", ".join(dict.fromkeys(e[0] for e in events))) from exc

    async def events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        params = {"job_id": job_id, "after": after, "limit": limit}
        rows = self._db().execute(self._q["events"], params).fetchall()
        if not rows and self._find(job_id) is None:
            raise JobNotFound(job_id)
        return [_event(row) for row in rows]

    async def events_since(self, after: int, *, limit: int = 500) -> list[JobEvent]:
        rules.check_limit(limit)
        rows = self._db().execute(self._q["events_since"], {"after": after, "limit": limit})
        return [_event(row) for row in rows.fetchall()]

    async def latest_event_seq(self) -> int:
        row = self._db().execute(self._q["newest_event"]).fetchone()
        return int(row["seq"])

    async def wait_events_since(
        self, after: int, *, timeout: float, limit: int = 500
    ) -> list[JobEvent]:
        return await wait_for_any_events(
            self, self._waiters, after=after, timeout=timeout, limit=limit
        )

    async def wait_events(self, job_id: str, *, after: int, timeout: float) -> list[JobEvent]:
        return await wait_for_events(self, self._waiters, job_id, after=after, timeout=timeout)

    async def wait_end(self, job_id: str, *, timeout: float) -> Job:
        return await wait_for_end(self, self._waiters, job_id, timeout=timeout)

    async def close(self) -> None:
        self._waiters.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- helpers ----------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JobStoreError("the job store is closed")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction; event waiters are woken once it is committed."""
        try:
            with immediate(self._db(), self._q) as conn:
                yield conn
        except BaseException:
            self._changed.clear()
            raise
        changed, self._changed = self._changed, []
        for job_id, kind in changed:
            self._waiters.notify(job_id, kind)

    def _change_held(
        self,
        job_id: str,
        worker: str,
        now: float | None,
        rule: rules.Rule,
        attempt: int | None = None,
    ) -> Job | None:
        """Apply `rule` if `worker` holds the job (in `attempt`, where given); None (and no
        change) if it does not."""
        with self._write():
            job = self._find(job_id)
            if job is None or not rules.holds(job, worker, attempt):
                return None
            at = _now(now)
            return self._record(rule(job, now=at), at)

    def _find(self, job_id: str) -> Job | None:
        row = self._db().execute(self._q["get_job"], {"id": job_id}).fetchone()
        return None if row is None else _job(row)

    def _count(self, status: JobStatus) -> int:
        row = self._db().execute(self._q["count_by_status"], {"status": str(status)}).fetchone()
        return int(row[0])

    def _record(self, change: rules.Change, at: float) -> Job:
        """Store a change and its event (inside a `_write` transaction)."""
        params = _mutable_columns(change.job) | {"seq": change.job.seq}
        self._db().execute(self._q["update_job"], params)
        self._append(change.job.id, change.kind, change.data, at)
        return change.job

    def _append(self, job_id: str, kind: str, data: dict[str, Any], at: float) -> JobEvent:
        encoded = _dump(data)
        params = {"job_id": job_id, "kind": kind, "data": encoded, "at": at}
        seq = self._db().execute(self._q["insert_event"], params).lastrowid
        assert seq is not None
        self._changed.append((job_id, kind))
        return JobEvent(seq=seq, job_id=job_id, kind=kind, data=_load(encoded), at=at)


_LARGE_GRAPH = 2000
"""Nodes above which a graph is encoded in a worker thread."""


def _open_error(path: Path, exc: BaseException) -> JobStoreError:
    return JobStoreError(
        f"cannot open the job store {path}: {exc}",
        hint="check that its directory is writable and that the file is a comfyfleet job store",
    )
