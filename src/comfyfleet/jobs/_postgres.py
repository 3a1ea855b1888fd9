"""The job store on PostgreSQL: the backend for several machines sharing one queue.

Every change reads the job it changes under a row lock (`FOR UPDATE`), decides with the same
rules as every other backend (`_store`), and writes the job and its event in one statement,
committed before the call returns. Claims lock with `SKIP LOCKED`: racing claimers in any number
of processes each take a different job without waiting for each other. A worker can finish only
the job it holds (status running, worker its own); once its lease lapsed and `release_expired`
put the job back, someone else's claim makes it another attempt and the old worker's
`complete` is refused, as in the SQLite store.

Round trips, statements and flushes are what cost here, so enqueues, claims and changes of
jobs (complete, fail, cancel...) are written in batches (`_pgbatch`, `_postgres_writes`): calls
that arrive while one batch is being written share the next batch's transaction, a statement
for all their rows, and one wait for the disk. A change is two trips per batch: BEGIN, the
event-horizon lock and the row locks travel together, then the writes and COMMIT
(`db.script`); an enqueue is one. A lone call is written at once.

Notifications (see `_pglisten`) wake event streams and dispatchers in every process. All SQL is
in `sql/postgres/`: numbered migrations and `queries.sql`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import psycopg

from comfyfleet.db import (
    NO_CURSOR,
    Connection,
    Database,
    connect,
    load_migrations,
    load_queries,
    migrate,
    redact,
    script,
)
from comfyfleet.jobs import _rules as rules
from comfyfleet.jobs._model import (
    Job,
    JobEnding,
    JobNotFound,
    JobStatus,
    JobStoreError,
    NewJob,
)
from comfyfleet.jobs._outputs import JobOutput
from comfyfleet.jobs._pgbatch import Batches
from comfyfleet.jobs._pglisten import Listener
from comfyfleet.jobs._postgres_events import BEGIN, COMMIT, PostgresEventLog
from comfyfleet.jobs._postgres_retention import PostgresRetention
from comfyfleet.jobs._postgres_writes import (
    Change,
    Changed,
    Claim,
    Enqueue,
    PostgresWrites,
    one_at_a_time,
)
from comfyfleet.jobs._progress import JobProgress
from comfyfleet.jobs._routing import Affinity
from comfyfleet.jobs._rows import clock, dump, ending_from_row, job_from_row
from comfyfleet.jobs._store import EventWaiters, wait_for_end

JOBS_SQL = "comfyfleet.jobs"
"""The package whose `sql/` folders hold the job store's schema and queries."""

Decide = Callable[[Job], "rules.Change | None"]


class PostgresJobStore(PostgresWrites, PostgresEventLog, PostgresRetention):
    """Open with :meth:`open`; `migrated` lists the schema versions that opening applied."""

    def __init__(self, url: str, queries: dict[str, str]) -> None:
        self._url = url
        self.url = redact(url)
        self._q = queries
        self._db = Database(url, JobStoreError, "job store")
        self._waiters = EventWaiters()
        self._on_queued: list[Callable[[], None]] = []
        self._listener = Listener(
            url, on_event=self._waiters.notify, on_queued=self._queued, on_lost=self._lost
        )
        self.migrated: list[int] = []
        self._enqueues = Batches(
            self._write_enqueues, key=lambda call: call.new.id, alone=one_at_a_time
        )
        self._claims = Batches(self._write_claims, alone=one_at_a_time)
        self._changes = Batches(
            self._write_changes, key=lambda call: call.job_id, alone=one_at_a_time
        )

    @classmethod
    async def open(cls, url: str) -> PostgresJobStore:
        """Connect to `url`, migrate the database, and start listening for notifications."""
        queries = load_queries(JOBS_SQL, folder="sql/postgres")
        conn = await connect(url, JobStoreError, "job store")
        store = cls(url, queries)
        try:
            migrations = load_migrations(JOBS_SQL, "sql/postgres")
            store.migrated = await migrate(conn, queries, migrations, url=url, error=JobStoreError)
            await store._db.open()
            await store._listener.start(conn)  # the listener owns (and closes) it from here
        except BaseException as exc:
            await conn.close()
            await store.close()
            if isinstance(exc, psycopg.Error):
                raise store._db.failure(exc) from exc
            raise
        return store

    def on_queued(self, callback: Callable[[], None]) -> None:
        """:class:`~comfyfleet.jobs._store.QueueSignal`: `callback` runs when any process
        enqueues or requeues a job, and after a lost notification connection came back."""
        self._on_queued.append(callback)

    # --- the JobStore protocol ---------------------------------------------------------------
    async def enqueue(
        self, job: NewJob, *, max_queued: int | None = None, now: float | None = None
    ) -> tuple[Job, bool]:
        change = rules.created(job, seq=0, now=clock(now))
        workflow, options = dump(job.workflow), dump(job.options.to_json())
        return await self._enqueues.submit(Enqueue(job, max_queued, change, workflow, options))

    async def get(self, job_id: str) -> Job:
        job = await self._db.run(partial(self._find, job_id=job_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def wait_end(self, job_id: str, *, timeout: float) -> Job:
        """Woken by the notification of any process's status event for the job."""
        return await wait_for_end(self, self._waiters, job_id, timeout=timeout)

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
        rows = await self._rows(name if status is None else f"{name}_by_status", params)
        return rules.page([job_from_row(row) for row in rows], limit)

    async def count(self, status: JobStatus) -> int:
        (row,) = await self._rows("count_by_status", {"status": str(status)})
        return int(row["n"])

    async def queue_depths(self) -> dict[int, int]:
        rows = await self._rows("queue_depths", {})
        return {int(row["priority"]): int(row["n"]) for row in rows}

    async def endings(self, *, since: float, limit: int = 20_000) -> list[JobEnding]:
        rows = await self._rows("endings", {"since": since, "limit": limit})
        return [ending_from_row(row) for row in rows]

    async def queue_position(self, job_id: str) -> int | None:
        rows = await self._rows("queue_position", {"id": job_id})
        if not rows:
            raise JobNotFound(job_id)
        return None if rows[0]["n"] is None else int(rows[0]["n"])

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
        def rule(job: Job, at: float) -> rules.Change:
            return rules.claimed(
                job, worker, lease_s=lease_s, now=at, instance=instance, prompt_id=prompt_id
            )

        return await self._claims.submit(Claim(rule, affinity, now))

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], *, lease_s: float, now: float | None = None
    ) -> list[str]:
        if not job_ids:
            return []
        params = {"ids": list(job_ids), "worker": worker, "lease_until": clock(now) + lease_s}

        async def renew(conn: Connection) -> list[dict[str, Any]]:
            statements = [BEGIN, self._q["passing_commit"], self._q["extend_lease"], COMMIT]
            return await script(conn, statements, params)

        held = {row["id"] for row in await self._db.run(renew)}
        return [job_id for job_id in job_ids if job_id in held]

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
        params |= {"progress": None if progress is None else dump(progress.to_json())}

        async def update(conn: Connection) -> bool:
            statements = [BEGIN, self._q["passing_commit"], self._q["set_running_info"], COMMIT]
            return bool(await script(conn, statements, params))

        return await self._db.run(update)

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
        return await self._change_held(job_id, worker, now, rule, attempt)

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
        return await self._change_held(job_id, worker, now, rule, attempt)

    async def cancel(self, job_id: str, *, now: float | None = None) -> Job:
        at = clock(now)
        job, change = await self._change(job_id, partial(rules.cancel_requested, now=at), at)
        if job is None:
            raise JobNotFound(job_id)
        return job if change is None else change.job

    async def fail_queued(
        self, job_id: str, error: dict[str, Any], *, now: float | None = None
    ) -> Job | None:
        at = clock(now)
        rule = partial(rules.failed_in_queue, error=error, now=at)
        job, change = await self._change(job_id, rule, at)
        if job is None:
            raise JobNotFound(job_id)
        return None if change is None else change.job

    async def mark_cancelled(
        self, job_id: str, worker: str, *, now: float | None = None
    ) -> Job | None:
        return await self._change_held(job_id, worker, now, rules.cancelled)

    async def release_expired(self, *, now: float | None = None) -> list[str]:
        at = clock(now)

        async def release(conn: Connection) -> list[str]:
            q = self._q
            rows = await script(conn, [BEGIN, q["writing_events"], q["lapsed_leases"]], {"now": at})
            lapsed = [job_from_row(row) for row in rows]
            changes = [(rules.expired(job, now=at), at) for job in lapsed]
            await self._record(conn, changes, then=COMMIT)
            return [job.id for job in lapsed]

        return await self._db.run(release)

    async def close(self) -> None:
        self._waiters.close()
        await self._listener.close()
        await self._db.close()

    # --- helpers ----------------------------------------------------------------------------
    async def _change_held(
        self,
        job_id: str,
        worker: str,
        now: float | None,
        rule: rules.Rule,
        attempt: int | None = None,
    ) -> Job | None:
        """Apply `rule` if `worker` holds the job (in `attempt`, where given); None (and no
        change) if it does not."""
        at = clock(now)

        def decide(job: Job) -> rules.Change | None:
            return rule(job, now=at) if rules.holds(job, worker, attempt) else None

        _, change = await self._change(job_id, decide, at)
        return None if change is None else change.job

    async def _change(self, job_id: str, decide: Decide, at: float) -> Changed:
        """Lock the job and record what `decide` makes of it, in one transaction (shared with
        other calls' changes): (the job as it was, the change) or None for either."""
        return await self._changes.submit(Change(job_id, decide, at))

    async def _find(self, conn: Connection, job_id: str) -> Job | None:
        row = await (await conn.execute(self._q["get_job"], {"id": job_id})).fetchone()
        return None if row is None else job_from_row(row)

    def _queued(self) -> None:
        for callback in self._on_queued:
            callback()

    def _lost(self) -> None:
        """Notifications may have been missed while the listener was away: look again."""
        self._waiters.notify_all()
        self._queued()
