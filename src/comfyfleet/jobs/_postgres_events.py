"""The job store's event log on PostgreSQL: publishing, reading, and waiting for events.

Events are read below a horizon (see `writing_events` in `sql/postgres/queries.sql`): a reader
that moves its cursor past what it got never skips an event committed later. Waits are woken by
the notifications of every process (`_pglisten`) through `EventWaiters`.

Published events record moments that pass (progress, the node running, outputs as ComfyUI
announces them): their transactions commit without waiting for the disk (`passing_commit`),
which on a busy disk is most of a write's time. A server crash may lose the last of them; a
job's state changes (enqueue, claim, the end of an attempt) and their `status` events are still
flushed before they are acknowledged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.errors import ForeignKeyViolation
from psycopg.rows import DictRow

from comfyfleet.db import Connection, Database, script
from comfyfleet.jobs import _rules as rules
from comfyfleet.jobs._model import JobEvent, JobNotFound
from comfyfleet.jobs._rows import clock, dump, event_from_row
from comfyfleet.jobs._rows import load as _load
from comfyfleet.jobs._store import (
    EventWaiters,
    Publication,
    wait_for_any_events,
    wait_for_events,
)

BEGIN, COMMIT = "BEGIN", "COMMIT"


class PostgresEventLog:
    """The event half of `PostgresJobStore` (which opens the database and the listener)."""

    _db: Database
    _q: dict[str, str]
    _waiters: EventWaiters

    async def publish(
        self, job_id: str, kind: str, data: dict[str, Any], *, now: float | None = None
    ) -> JobEvent:
        at, encoded = clock(now), dump(data)
        params = {"job_id": job_id, "kind": kind, "data": encoded, "at": at}

        async def insert(conn: Connection) -> list[DictRow]:
            q = self._q
            statements = [BEGIN, q["passing_commit"], q["writing_events"], q["insert_event"]]
            statements.append(COMMIT)
            return await script(conn, statements, params)

        rows = await self._db.run(insert)
        if not rows:
            raise JobNotFound(job_id)
        seq = rows[0]["seq"]
        return JobEvent(seq=seq, job_id=job_id, kind=kind, data=_load(encoded), at=at)

    async def publish_many(
        self, events: Sequence[Publication], *, now: float | None = None
    ) -> list[JobEvent]:
        """Several events in one transaction and one round trip (see `BatchPublisher`): a
        running job's progress comes in bursts, and each transaction of its own costs a trip
        and a commit on the path of the job's end."""
        if not events:
            return []
        at = clock(now)
        encoded = [dump(data) for _, _, data in events]
        job_ids = [job_id for job_id, _, _ in events]
        kinds = [kind for _, kind, _ in events]
        params: dict[str, Any] = {"job_ids": job_ids, "kinds": kinds, "datas": encoded, "at": at}

        async def insert(conn: Connection) -> list[DictRow]:
            q = self._q
            statements = [BEGIN, q["passing_commit"], q["writing_events"], q["lock_event_jobs"]]
            statements += [q["insert_events"], COMMIT]
            return await script(conn, statements, params, rows_of=4)

        try:
            rows = await self._db.run(insert)
        except ForeignKeyViolation as exc:
            # The key does not say which of the batch's jobs is missing: all are named.
            raise JobNotFound(", ".join(dict.fromkeys(job_ids))) from exc
        seqs = sorted(row["seq"] for row in rows)
        return [
            JobEvent(seq=seq, job_id=job_id, kind=kind, data=_load(text), at=at)
            for seq, (job_id, kind, _), text in zip(seqs, events, encoded, strict=True)
        ]

    async def events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        params = {"job_id": job_id, "after": after, "limit": limit}
        rows = await self._rows("events", params)
        if not rows and not await self._rows("job_exists", {"id": job_id}):
            raise JobNotFound(job_id)
        return [event_from_row(row) for row in rows]

    async def events_since(self, after: int, *, limit: int = 500) -> list[JobEvent]:
        """Only events below the horizon (`writing_events` in queries.sql): a relay moving its
        cursor past what this returns can never skip an event committed later."""
        rules.check_limit(limit)

        async def read(conn: Connection) -> list[dict[str, Any]]:
            q = self._q
            statements = [BEGIN, q["horizon_lock_timeout"], q["event_horizon"], q["newest_event"]]
            (row,) = await script(conn, [*statements, COMMIT])
            params = {"after": after, "horizon": row["seq"], "limit": limit}
            return await (await conn.execute(self._q["events_since"], params)).fetchall()

        return [event_from_row(row) for row in await self._db.run(read)]

    async def latest_event_seq(self) -> int:
        (row,) = await self._rows("newest_event", {})
        return int(row["seq"])

    async def wait_events_since(
        self, after: int, *, timeout: float, limit: int = 500
    ) -> list[JobEvent]:
        return await wait_for_any_events(
            self, self._waiters, after=after, timeout=timeout, limit=limit
        )

    async def wait_events(self, job_id: str, *, after: int, timeout: float) -> list[JobEvent]:
        """Woken by the notification of any process's event for the job."""
        return await wait_for_events(self, self._waiters, job_id, after=after, timeout=timeout)

    async def _rows(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async def read(conn: Connection) -> list[dict[str, Any]]:
            return await (await conn.execute(self._q[query], params)).fetchall()

        return await self._db.run(read)
