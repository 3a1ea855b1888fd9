"""The PostgreSQL store's writes, in batches: enqueues, claims and changes of held jobs.

`PostgresJobStore` hands each call to a `_pgbatch.Batches`; the writers here turn a batch into
one transaction with a fixed number of round trips, whatever its size:

- enqueues: one (`insert_jobs`: every job and its first event), plus one to read the jobs
  whose id was taken or that the queue limit kept out. The jobs are committed without waiting
  for the disk, so that dispatchers hear of them and claim them at once, and the same trip
  then waits for the disk (`durable_mark`) before any enqueue of the batch returns: a job is
  acknowledged only once it is durable, but a dispatcher does not wait for that flush (a
  server crash in between loses a job nobody was told was taken; its claim, if any, goes with
  it);
- claims: two (`next_queued` for as many jobs as there are claimers with one affinity, then
  the claims and their events), one more when a job has a running limit (the key's lock and
  count, as for a single claim);
- changes (complete, fail, cancel...): two (lock the jobs, then the changes and their events).

Each call is decided by the same rules as alone (`_rules`, `_routing`): a batch only shares the
transaction. A claim commits without waiting for the disk (see `_claim_once`); enqueues and
changes wait for it before any call of the batch returns, and a change (the end of an attempt
above all) is seen by others only once it is on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from psycopg.errors import DeadlockDetected, SerializationFailure

from comfyfleet.db import Connection, Database, script
from comfyfleet.jobs import _rules as rules
from comfyfleet.jobs._model import Job, JobConflict, JobStoreError, NewJob, QueueFull
from comfyfleet.jobs._options import JobOptions
from comfyfleet.jobs._pgbatch import Failed
from comfyfleet.jobs._postgres_events import BEGIN, COMMIT
from comfyfleet.jobs._routing import Affinity, claim_params, under_limit
from comfyfleet.jobs._rows import clock, dump, job_from_row, mutable_columns
from comfyfleet.jobs._rows import load as _load


@dataclass(frozen=True)
class Enqueue:
    """One `enqueue` call: the job, its queue limit, and the change that creates it."""

    new: NewJob
    max_queued: int | None
    change: rules.Change
    workflow: str
    options: str


@dataclass(frozen=True)
class Claim:
    """One `claim` call: `rule` makes the claim of a job at a time; calls with the same
    affinity and clock share one query."""

    rule: Callable[[Job, float], rules.Change]
    affinity: Affinity | None
    now: float | None


@dataclass(frozen=True)
class Change:
    """One change of a job (complete, fail, cancel...): `decide` says what it makes of the job
    as it is, or None to leave it. `at` stamps its event."""

    job_id: str
    decide: Callable[[Job], rules.Change | None]
    at: float


Changed = tuple[Job | None, rules.Change | None]
"""A change's outcome: the job as it was (None: no such job) and what was made of it."""


def one_at_a_time(error: BaseException) -> bool:
    """Whether a failed batch is worth writing again call by call: yes for what may be one
    call's doing (a value the database refuses) or the batch's bad luck (a deadlock, which
    the database breaks by failing one side); not when the store itself failed (unreachable,
    closed), which every call would meet again."""
    if isinstance(error, JobStoreError):
        return isinstance(error.__cause__, (DeadlockDetected, SerializationFailure))
    return True


class PostgresWrites:
    """The writing half of `PostgresJobStore` (which owns the batches that call these)."""

    _db: Database
    _q: dict[str, str]

    async def _write_enqueues(self, calls: list[Enqueue]) -> list[tuple[Job, bool] | Failed]:
        rows, limited = [], 0
        for call in calls:
            limited += call.max_queued is not None
            row = _columns(call.change.job) | {"id": call.new.id, "workflow": call.workflow}
            row |= {"priority": call.new.priority, "max_attempts": call.new.max_attempts}
            row |= {"created_at": call.change.job.created_at, "owner": call.new.owner}
            row |= {"request_hash": call.new.request_hash, "options": call.options}
            row |= {"models": list(call.new.models), "max_running": call.new.max_running}
            row |= {"max_queued": call.max_queued, "n": limited}
            rows.append(row | {"kind": call.change.kind, "data": dump(call.change.data)})
        most = max((c.max_queued for c in calls if c.max_queued is not None), default=0)
        params = {"jobs": dump(rows), "most": most}

        async def insert(conn: Connection) -> tuple[dict[str, int], dict[str, Job]]:
            q = self._q
            statements = [BEGIN, q["passing_commit"], q["writing_events"], q["insert_jobs"]]
            statements += [COMMIT, BEGIN, q["durable_mark"], COMMIT]
            rows = await script(conn, statements, params, rows_of=3)
            seqs = {row["id"]: row["seq"] for row in rows}
            taken = [call.new.id for call in calls if call.new.id not in seqs]
            if not taken:
                return seqs, {}
            found = await (await conn.execute(q["get_jobs"], {"ids": taken})).fetchall()
            return seqs, {row["id"]: job_from_row(row) for row in found}

        seqs, found = await self._db.run(insert)
        return [_enqueued(call, seqs, found) for call in calls]

    async def _write_claims(self, calls: list[Claim]) -> list[Job | None]:
        """Calls grouped by affinity and clock, a transaction per group."""
        groups: dict[tuple[Affinity | None, float | None], list[int]] = {}
        for i, call in enumerate(calls):
            groups.setdefault((call.affinity, call.now), []).append(i)
        jobs: list[Job | None] = [None] * len(calls)
        for (affinity, now), members in groups.items():
            changes = await self._claim_group([calls[i] for i in members], affinity, now)
            for i, change in zip(members, changes, strict=True):
                jobs[i] = None if change is None else change.job
        return jobs

    async def _claim_group(
        self, calls: list[Claim], affinity: Affinity | None, now: float | None
    ) -> list[rules.Change | None]:
        at = clock(now)
        params = claim_params(affinity, now=at) | {"excluded": []}
        changes: list[rules.Change | None] = [None] * len(calls)
        waiting = list(range(len(calls)))
        while waiting:
            params["count"] = len(waiting)
            claimers = [calls[i] for i in waiting]
            made, full = await self._db.run(partial(self._claim_once, params, claimers, at))
            for i, change in zip(waiting, made, strict=True):
                changes[i] = change
            if not full:
                break
            # Those keys reached their limits since the query counted: their jobs wait, and
            # the claimers left without a job look again among the others'.
            waiting = [i for i, change in zip(waiting, made, strict=True) if change is None]
            params["excluded"] = [*params["excluded"], *full]
        return changes

    async def _claim_once(
        self, params: dict[str, Any], calls: list[Claim], at: float, conn: Connection
    ) -> tuple[list[rules.Change | None], list[str]]:
        """One claim transaction for `calls`: a change per call (None: no job for it) and the
        keys whose jobs had to be left because the key reached its running limit once
        claimers of its jobs took turns (`lock_owners_running`).

        A claim commits without waiting for the disk (`passing_commit`): were a server crash to
        lose it, the job would be queued again and its first run could not end it (its worker
        no longer holds it), so the cost is a run, never a second result. The next flushed
        commit of any session (an enqueue, an attempt's end) flushes it too."""
        q = self._q
        statements = [BEGIN, q["passing_commit"], q["writing_events"], q["next_queued"]]
        found = [job_from_row(row) for row in await script(conn, statements, params)]
        jobs, full = await self._within_limits(conn, found)
        changes = [call.rule(job, at) for call, job in zip(calls, jobs, strict=False)]
        await self._record(conn, [(change, at) for change in changes], then=COMMIT)
        return [*changes, *[None] * (len(calls) - len(changes))], full

    async def _within_limits(
        self, conn: Connection, jobs: list[Job]
    ) -> tuple[list[Job], list[str]]:
        """`jobs` less those whose key would pass its running limit, and those keys."""
        owners = sorted(
            {j.owner for j in jobs if j.owner is not None and j.max_running is not None}
        )
        if not owners:
            return jobs, []
        statements = [self._q["lock_owners_running"], self._q["owners_running"]]
        rows = await script(conn, statements, {"owners": owners})
        running = {row["owner"]: int(row["n"]) for row in rows}
        kept: list[Job] = []
        full: list[str] = []
        for job in jobs:
            if job.owner in owners:
                if not under_limit(job, running.get(job.owner, 0)):
                    full += [] if job.owner in full else [job.owner]
                    continue
                running[job.owner] = running.get(job.owner, 0) + 1
            kept.append(job)
        return kept, full

    async def _write_changes(self, calls: list[Change]) -> list[Changed]:
        """Lock the calls' jobs (one job at most once per batch: see `Batches`' key) and record
        what each call makes of its job, in one transaction."""
        ids = sorted({call.job_id for call in calls})

        async def write(conn: Connection) -> list[Changed]:
            statements = [BEGIN, self._q["writing_events"], self._q["lock_jobs"]]
            jobs = {
                row["id"]: job_from_row(row) for row in await script(conn, statements, {"ids": ids})
            }
            outcomes: list[Changed] = []
            for call in calls:
                job = jobs.get(call.job_id)
                outcomes.append((job, None if job is None else call.decide(job)))
            made = [
                (change, call.at)
                for call, (_, change) in zip(calls, outcomes, strict=True)
                if change is not None
            ]
            await self._record(conn, made, then=COMMIT)
            return outcomes

        return await self._db.run(write)

    async def _record(
        self,
        conn: Connection,
        changes: list[tuple[rules.Change, float]],
        *,
        then: str | None = None,
    ) -> None:
        """Write changes and their events (inside a transaction; each event stamped with its
        time); `then` travels with them."""
        tail = [then] if then else []
        if not changes:
            if tail:
                await conn.execute(then or "")
            return
        rows = [
            _columns(change.job)
            | {"seq": change.job.seq, "kind": change.kind, "data": dump(change.data), "at": at}
            for change, at in changes
        ]
        await script(conn, [self._q["record_changes"], *tail], {"changes": dump(rows)})


def _enqueued(
    call: Enqueue, seqs: dict[str, int], found: dict[str, Job]
) -> tuple[Job, bool] | Failed:
    job_id = call.new.id
    if job_id in seqs:
        stored = replace(
            call.change.job,
            workflow=_load(call.workflow),
            options=JobOptions.from_json(_load(call.options)),
        )
        return replace(stored, seq=seqs[job_id]), True
    existing = found.get(job_id)
    if existing is None:
        if call.max_queued is None:
            return Failed(JobStoreError(f"job {job_id} was neither stored nor found"))
        return Failed(QueueFull(call.max_queued))
    if not rules.repeats(existing, call.new):
        return Failed(JobConflict(job_id))
    return existing, False


def _columns(job: Job) -> dict[str, Any]:
    return mutable_columns(job) | {"cancel_requested": job.cancel_requested}
