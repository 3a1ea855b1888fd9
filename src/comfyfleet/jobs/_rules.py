"""The rules every job store backend shares: what a change *is*.

Backends only have to make each change atomic (a lock in memory, `BEGIN IMMEDIATE` in SQLite,
`SELECT ... FOR UPDATE` in PostgreSQL); what a change does (claim, complete, fail, cancel, lose a
lease) is decided by the pure functions here, so that every backend moves jobs through exactly
the same states and appends exactly the same events.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from comfyfleet.jobs._model import InvalidCursor, Job, JobStatus, NewJob
from comfyfleet.jobs._outputs import JobOutput

LEASE_EXPIRED: dict[str, Any] = {
    "code": "lease_expired",
    "message": "the worker running it stopped heartbeating",
    "retryable": True,
}


@dataclass(frozen=True)
class Change:
    """A job's new state and the one event that records the move."""

    job: Job
    kind: str
    data: dict[str, Any]


class Rule(Protocol):
    """A change to a job its worker holds, such as `completed` with its outputs bound."""

    def __call__(self, job: Job, *, now: float) -> Change: ...


def created(new: NewJob, *, seq: int, now: float) -> Change:
    job = Job(
        id=new.id,
        workflow=new.workflow,
        priority=new.priority,
        status=JobStatus.QUEUED,
        attempts=0,
        max_attempts=new.max_attempts,
        created_at=now,
        queued_at=now,
        started_at=None,
        finished_at=None,
        worker=None,
        lease_until=None,
        instance=None,
        prompt_id=None,
        progress=None,
        outputs=[],
        error=None,
        cancel_requested=False,
        request_hash=new.request_hash,
        seq=seq,
        options=new.options,
        owner=new.owner,
        models=tuple(new.models),
        max_running=new.max_running,
    )
    return Change(job, "status", {"status": "queued"})


def repeats(existing: Job, new: NewJob) -> bool:
    """Whether `new` is a retry of the stored job: same request from the same owner. Anything
    else under that id is a conflict (never the other owner's job handed back)."""
    return existing.request_hash == new.request_hash and existing.owner == new.owner


def claimed(
    job: Job,
    worker: str,
    *,
    lease_s: float,
    now: float,
    instance: int | None = None,
    prompt_id: str | None = None,
) -> Change:
    attempt = job.attempts + 1
    job = replace(
        job,
        status=JobStatus.RUNNING,
        attempts=attempt,
        worker=worker,
        lease_until=now + lease_s,
        started_at=now,
        instance=instance,
        prompt_id=prompt_id,
        progress=None,
    )
    data: dict[str, Any] = {"status": "running", "attempt": attempt}
    if instance is not None:
        data["instance"] = instance
    return Change(job, "status", data)


def holds(job: Job, worker: str, attempt: int | None = None) -> bool:
    """Whether `worker` may finish the job (its attempt number `attempt`, where given). A lapsed
    lease that was not released yet still counts: until `release_expired` runs, nobody else can
    have claimed the job. The attempt tells a late end of an earlier attempt from the current
    one when the same worker claimed the job again after its lease lapsed."""
    held = job.status is JobStatus.RUNNING and job.worker == worker
    return held and (attempt is None or job.attempts == attempt)


def completed(
    job: Job,
    outputs: list[JobOutput],
    *,
    now: float,
    details: dict[str, Any] | None = None,
) -> Change:
    # An earlier attempt's error (an instance lost, say) is history, not this job's result:
    # its `status` event keeps it, the job's `error` is cleared.
    job = _finished(job, JobStatus.SUCCEEDED, now, outputs=outputs, error=None)
    return Change(job, "status", {**(details or {}), "status": "succeeded"})


def failed(job: Job, error: dict[str, Any], *, retryable: bool, now: float) -> Change:
    """A failed attempt. A job someone asked to cancel is cancelled rather than run again."""
    if job.cancel_requested:
        return cancelled(job, now=now, error=error)
    if retryable and job.attempts < job.max_attempts:
        job = replace(
            job, status=JobStatus.QUEUED, queued_at=now, worker=None, lease_until=None, error=error
        )
        return Change(job, "status", {"status": "queued", "retry": True, "error": error})
    job = _finished(job, JobStatus.FAILED, now, error=error)
    return Change(job, "status", {"status": "failed", "error": error})


def cancelled(job: Job, *, now: float, error: dict[str, Any] | None = None) -> Change:
    job = _finished(job, JobStatus.CANCELLED, now, error=error, cancel_requested=True)
    return Change(job, "status", {"status": "cancelled"})


def failed_in_queue(job: Job, error: dict[str, Any], *, now: float) -> Change | None:
    """A queued job given up on (its queue timeout passed): failed for good."""
    if job.status is not JobStatus.QUEUED:
        return None
    job = _finished(job, JobStatus.FAILED, now, error=error)
    return Change(job, "status", {"status": "failed", "error": error})


def cancel_requested(job: Job, *, now: float) -> Change | None:
    """What `cancel` does to a job: None when there is nothing left to do."""
    if job.status is JobStatus.QUEUED:
        return cancelled(job, now=now)
    if job.status is JobStatus.RUNNING and not job.cancel_requested:
        return Change(replace(job, cancel_requested=True), "cancel_requested", {})
    return None


def expired(job: Job, *, now: float) -> Change:
    return failed(job, dict(LEASE_EXPIRED), retryable=True, now=now)


def cursor_seq(cursor: str | None) -> int | None:
    """The seq a list cursor stands for: listings continue below it."""
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:  # SQLite's 64 bits
        raise InvalidCursor(cursor)
    return int(cursor)


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def page(jobs: list[Job], limit: int) -> tuple[list[Job], str | None]:
    """Cut a listing fetched with one job too many: that extra job says whether a next page
    exists, so the last page never points at an empty one."""
    if len(jobs) <= limit:
        return jobs, None
    return jobs[:limit], str(jobs[limit - 1].seq)


def _finished(job: Job, status: JobStatus, now: float, **changes: Any) -> Job:
    return replace(job, status=status, finished_at=now, worker=None, lease_until=None, **changes)
