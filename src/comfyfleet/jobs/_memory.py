"""A job store in dictionaries: for unit tests and `memory://`, where losing jobs on exit is fine.

It keeps to the same contract as the durable stores, down to JSON: payloads are stored and handed
out as JSON copies, so that code which works here (say, a dispatcher that edits the workflow it
was given) cannot depend on sharing objects with the store, which no real backend does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from comfyfleet.jobs import _rules as rules
from comfyfleet.jobs._memory_retention import MemoryRetention
from comfyfleet.jobs._model import (
    TERMINAL,
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
from comfyfleet.jobs._outputs import JobOutput, outputs_from_json, outputs_to_json
from comfyfleet.jobs._progress import JobProgress
from comfyfleet.jobs._routing import Affinity, best_claim, plain_order
from comfyfleet.jobs._store import (
    EventWaiters,
    wait_for_any_events,
    wait_for_end,
    wait_for_events,
)


class MemoryJobStore(MemoryRetention):
    """Every method takes one asyncio.Lock, which makes each change atomic within the loop."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}  # insertion order is seq order
        # Ids by status (dicts keep order), so that claims do not scan every finished job.
        self._ids: dict[JobStatus, dict[str, None]] = {status: {} for status in JobStatus}
        # Ids by owner, oldest first, so that a key's listing does not scan everyone's jobs.
        self._owned: dict[str, dict[str, None]] = {}
        self._events: dict[str, list[JobEvent]] = {}
        self._lock = asyncio.Lock()
        self._job_seq = 0
        self._event_seq = 0
        self._waiters = EventWaiters()
        self._closed = False

    async def enqueue(
        self, job: NewJob, *, max_queued: int | None = None, now: float | None = None
    ) -> tuple[Job, bool]:
        async with self._locked():
            existing = self._jobs.get(job.id)
            if existing is not None:
                if not rules.repeats(existing, job):
                    raise JobConflict(job.id)
                return _out(existing), False
            if max_queued is not None and self._count(JobStatus.QUEUED) >= max_queued:
                raise QueueFull(max_queued)
            new = replace(
                job,
                workflow=_json_copy(job.workflow),
                options=JobOptions.from_json(_json_copy(job.options.to_json())),
            )
            self._job_seq += 1
            change = rules.created(new, seq=self._job_seq, now=_now(now))
            if new.owner is not None:
                self._owned.setdefault(new.owner, {})[new.id] = None
            return self._apply(change, change.job.created_at), True

    async def get(self, job_id: str) -> Job:
        async with self._locked():
            return _out(self._job(job_id))

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
        async with self._locked():
            ids = self._jobs if owner is None else self._owned.get(owner, {})
            found: list[Job] = []
            for job_id in reversed(ids):
                job = self._jobs[job_id]
                if len(found) > limit:
                    break
                if (status is None or job.status is status) and (
                    before is None or job.seq < before
                ):
                    found.append(_out(job))
            return rules.page(found, limit)

    async def count(self, status: JobStatus) -> int:
        async with self._locked():
            return self._count(status)

    async def queue_depths(self) -> dict[int, int]:
        async with self._locked():
            return dict(Counter(job.priority for job in self._with(JobStatus.QUEUED)))

    async def endings(self, *, since: float, limit: int = 20_000) -> list[JobEnding]:
        async with self._locked():
            ended = [
                JobEnding(job.status, job.priority, job.created_at, job.started_at, at)
                for status in TERMINAL
                for job in self._with(status)
                if (at := job.finished_at) is not None and at >= since
            ]
        return sorted(ended, key=lambda e: e.finished_at, reverse=True)[:limit]

    async def queue_position(self, job_id: str) -> int | None:
        async with self._locked():
            job = self._job(job_id)
            if job.status is not JobStatus.QUEUED:
                return None
            key = plain_order(job)
            return sum(1 for other in self._with(JobStatus.QUEUED) if plain_order(other) < key)

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
        async with self._locked():
            at = _now(now)
            running: Counter[str] = Counter(
                job.owner for job in self._with(JobStatus.RUNNING) if job.owner is not None
            )
            best = best_claim(self._with(JobStatus.QUEUED), running, affinity, now=at)
            if best is None:
                return None
            change = rules.claimed(
                best,
                worker,
                lease_s=lease_s,
                now=at,
                instance=instance,
                prompt_id=prompt_id,
            )
            return self._apply(change, at)

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], *, lease_s: float, now: float | None = None
    ) -> list[str]:
        lease_until = _now(now) + lease_s
        extended: list[str] = []
        async with self._locked():
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is not None and rules.holds(job, worker):
                    self._jobs[job_id] = replace(job, lease_until=lease_until)
                    extended.append(job_id)
        return extended

    async def set_running_info(
        self,
        job_id: str,
        worker: str,
        *,
        instance: int | None = None,
        prompt_id: str | None = None,
        progress: JobProgress | None = None,
    ) -> bool:
        async with self._locked():
            job = self._jobs.get(job_id)
            if job is None or not rules.holds(job, worker):
                return False
            self._jobs[job_id] = replace(
                job,
                instance=job.instance if instance is None else instance,
                prompt_id=job.prompt_id if prompt_id is None else prompt_id,
                progress=job.progress if progress is None else progress,
            )
            return True

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
        rule = partial(rules.completed, outputs=_outputs_copy(outputs), details=_json_copy(details))
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
        rule = partial(rules.failed, error=_json_copy(error), retryable=retryable)
        return await self._change_held(job_id, worker, now, rule, attempt)

    async def cancel(self, job_id: str, *, now: float | None = None) -> Job:
        async with self._locked():
            job = self._job(job_id)
            at = _now(now)
            change = rules.cancel_requested(job, now=at)
            return _out(job) if change is None else self._apply(change, at)

    async def fail_queued(
        self, job_id: str, error: dict[str, Any], *, now: float | None = None
    ) -> Job | None:
        async with self._locked():
            job = self._job(job_id)
            at = _now(now)
            change = rules.failed_in_queue(job, _json_copy(error), now=at)
            return None if change is None else self._apply(change, at)

    async def mark_cancelled(
        self, job_id: str, worker: str, *, now: float | None = None
    ) -> Job | None:
        return await self._change_held(job_id, worker, now, rules.cancelled)

    async def release_expired(self, *, now: float | None = None) -> list[str]:
        at = _now(now)
        async with self._locked():
            running = [self._jobs[job_id] for job_id in self._ids[JobStatus.RUNNING]]
            lapsed = [
                job for job in running if job.lease_until is not None and job.lease_until < at
            ]
            for job in lapsed:
                self._apply(rules.expired(job, now=at), at)
            return [job.id for job in lapsed]

    async def publish(
        self, job_id: str, kind: str, data: dict[str, Any], *, now: float | None = None
    ) -> JobEvent:
        async with self._locked():
            self._job(job_id)
            return self._append(job_id, kind, data, _now(now))

    async def events_since(self, after: int, *, limit: int = 500) -> list[JobEvent]:
        rules.check_limit(limit)
        async with self._locked():
            found = [e for events in self._events.values() for e in events if e.seq > after]
            found.sort(key=lambda event: event.seq)
            return [replace(event, data=_json_copy(event.data)) for event in found[:limit]]

    async def events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        async with self._locked():
            self._job(job_id)
            found = [event for event in self._events[job_id] if event.seq > after][:limit]
            return [replace(event, data=_json_copy(event.data)) for event in found]

    async def latest_event_seq(self) -> int:
        async with self._locked():
            return self._event_seq

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
        self._closed = True
        self._waiters.close()

    # --- helpers ----------------------------------------------------------------------------
    def _out(self, job: Job) -> Job:
        """A job as every method hands it out: a JSON copy (the retention half's way to it)."""
        return _out(job)

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
        async with self._locked():
            job = self._jobs.get(job_id)
            if job is None or not rules.holds(job, worker, attempt):
                return None
            at = _now(now)
            return self._apply(rule(job, now=at), at)

    def _locked(self) -> asyncio.Lock:
        if self._closed:
            raise JobStoreError("the job store is closed")
        return self._lock

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _count(self, status: JobStatus) -> int:
        return len(self._ids[status])

    def _with(self, status: JobStatus) -> list[Job]:
        return [self._jobs[job_id] for job_id in self._ids[status]]

    def _apply(self, change: rules.Change, at: float) -> Job:
        old = self._jobs.get(change.job.id)
        if old is not None:
            del self._ids[old.status][old.id]
        self._ids[change.job.status][change.job.id] = None
        self._jobs[change.job.id] = change.job
        self._append(change.job.id, change.kind, change.data, at)
        return _out(change.job)

    def _append(self, job_id: str, kind: str, data: dict[str, Any], at: float) -> JobEvent:
        self._event_seq += 1
        event = JobEvent(
            seq=self._event_seq, job_id=job_id, kind=kind, data=_json_copy(data), at=at
        )
        self._events.setdefault(job_id, []).append(event)
        self._waiters.notify(job_id, kind)
        return replace(event, data=_json_copy(data))


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _json_copy(value: Any) -> Any:
    """A copy through JSON: detaches it from the caller and refuses what no backend could store."""
    return json.loads(json.dumps(value))


def _outputs_copy(outputs: list[JobOutput]) -> list[JobOutput]:
    return outputs_from_json(_json_copy(outputs_to_json(outputs)))


def _out(job: Job) -> Job:
    return replace(
        job,
        workflow=_json_copy(job.workflow),
        outputs=_outputs_copy(job.outputs),
        error=_json_copy(job.error),
    )
