"""The job store interface, and how a store wakes the coroutines waiting for a job's events.

What each change does to a job is decided once for every backend, in `_rules`. Delivery is at
most once per lease: `claim` hands a job to one worker, and only that worker can complete, fail
or cancel it, until its lease lapses and `release_expired` puts the job back. A worker that
comes back after that finds its `complete` refused (None), so no job is delivered twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

from comfyfleet.jobs._model import FinishedJob, Job, JobEnding, JobEvent, JobStatus, NewJob
from comfyfleet.jobs._outputs import JobOutput
from comfyfleet.jobs._progress import JobProgress
from comfyfleet.jobs._routing import Affinity


class JobStore(Protocol):
    """Durable queue of jobs plus their event streams. Timestamps are `time.time()` unless `now`
    is given (tests, and callers that stamp several changes with one clock reading)."""

    async def enqueue(
        self, job: NewJob, *, max_queued: int | None = None, now: float | None = None
    ) -> tuple[Job, bool]:
        """Add a job, or return the one already stored under its id (then the flag is False).

        Raises JobConflict when that id was stored with another request hash or another owner,
        and QueueFull when `max_queued` jobs are already waiting (a repeat of a stored job is
        never refused)."""
        ...

    async def get(self, job_id: str) -> Job:
        """The job, whoever owns it: checking who may see it is the caller's business."""
        ...

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first; only `owner`'s jobs when given (None: every job). Pass the returned
        cursor for the next page; it is None after the last."""
        ...

    async def count(self, status: JobStatus) -> int: ...

    async def queue_depths(self) -> dict[int, int]:
        """How many jobs wait at each priority (priorities with none are left out)."""
        ...

    async def endings(self, *, since: float, limit: int = 20_000) -> list[JobEnding]:
        """The jobs that finished at or after `since`, newest first, at most `limit`: the
        figures of throughput and latency charts."""
        ...

    async def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs would be claimed before this one; None when it is not queued."""
        ...

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
        """Take the best queued job for `worker` (see :func:`claim_rank`: priority, then the
        models `affinity` says the instance holds, then age), recording the instance and
        prompt id it will run as (known before the claim, so one write does both). Jobs whose
        owner already runs `max_running` jobs are skipped."""
        ...

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], *, lease_s: float, now: float | None = None
    ) -> list[str]:
        """Extend the leases `worker` still holds; returns the ids it still holds."""
        ...

    async def set_running_info(
        self,
        job_id: str,
        worker: str,
        *,
        instance: int | None = None,
        prompt_id: str | None = None,
        progress: JobProgress | None = None,
    ) -> bool:
        """Record where and how far a running job is (None leaves a field as it is)."""
        ...

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
        """Finish a job `worker` holds (in its attempt number `attempt`, where given: a late end
        of an earlier attempt, after the same worker claimed the job again, is refused); None
        (and no change) when it no longer holds it.
        `details` are added to the data of the `succeeded` event (instance, ComfyUI's time)."""
        ...

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
        """Requeue (retryable, attempts left) or fail a job `worker` holds (in `attempt`, where
        given, as for `complete`); None if it does not."""
        ...

    async def cancel(self, job_id: str, *, now: float | None = None) -> Job:
        """Cancel a queued job at once, or ask the worker of a running one to stop it (a job
        that then finishes anyway stays succeeded; one that then fails is cancelled)."""
        ...

    async def fail_queued(
        self, job_id: str, error: dict[str, Any], *, now: float | None = None
    ) -> Job | None:
        """Fail a job nobody claimed yet (it waited longer than its queue timeout); None, and
        no change, when it is no longer queued."""
        ...

    async def mark_cancelled(
        self, job_id: str, worker: str, *, now: float | None = None
    ) -> Job | None:
        """The worker stopped a job it holds: it is cancelled. None when it does not hold it."""
        ...

    async def release_expired(self, *, now: float | None = None) -> list[str]:
        """Take back every running job whose lease lapsed; returns their ids."""
        ...

    async def publish(
        self, job_id: str, kind: str, data: dict[str, Any], *, now: float | None = None
    ) -> JobEvent: ...

    async def events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> list[JobEvent]: ...

    async def events_since(self, after: int, *, limit: int = 500) -> list[JobEvent]:
        """Every job's events after `after`, in order: the feed that relays (webhooks) follow
        with a cursor of their own."""
        ...

    async def forget(self, job_ids: Sequence[str]) -> int:
        """Remove these jobs and their events, where finished (a queued or running job stays);
        how many went. Ids that name no job are skipped."""
        ...

    async def finished_jobs(
        self, before: float, *, after: tuple[float, int] | None = None, limit: int = 500
    ) -> list[FinishedJob]:
        """Finished jobs that ended before `before`, oldest end first (then by seq), after the
        `cursor` of the last one a previous call returned: what retention may forget."""
        ...

    async def live_jobs(self, *, after: int = 0, limit: int = 500) -> list[Job]:
        """Queued and running jobs with a seq above `after`, by seq: what retention must keep
        the inputs, outputs and events of. A seq never changes, so paging on the last seq seen
        finds every job that stays queued or running (in either) while the pages are read."""
        ...

    async def latest_event_seq(self) -> int:
        """The seq of the newest event (0 when there is none): where a feed that only wants
        what happens from now on starts."""
        ...

    async def wait_events_since(
        self, after: int, *, timeout: float, limit: int = 500
    ) -> list[JobEvent]:
        """`events_since`, waiting up to `timeout` seconds for the first event of any job: the
        feed that fans one process's view of every job out to many clients (the ComfyUI
        WebSocket) follows it, instead of one wait per job."""
        ...

    async def wait_events(self, job_id: str, *, after: int, timeout: float) -> list[JobEvent]:
        """The events after `after`, waiting up to `timeout` seconds for the first one.

        Wakes on events published through this store object (the gateway and the dispatcher
        share one); an event another process wrote to a shared SQLite file shows at the end."""
        ...

    async def wait_end(self, job_id: str, *, timeout: float) -> Job:
        """The job once it has ended, or as it is when `timeout` seconds have passed; JobNotFound
        if there is no such job. Wakes only on the job's `status` events, not on each of its
        progress events (a synchronous submit waits here: on PostgreSQL every wake is a read)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class QueueSignal(Protocol):
    """Optional for a backend: one that hears of jobs becoming claimable in other processes
    (PostgreSQL's notifications) says so to the callbacks given here, so that a dispatcher wakes
    at once instead of at its next poll. Backends without it are simply polled."""

    def on_queued(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the event loop, without awaiting) whenever a job was enqueued or
        put back in the queue, by any process; also, now and then, when nothing was."""
        ...


Publication = tuple[str, str, dict[str, Any]]
"""An event to publish: (job id, kind, data)."""


@runtime_checkable
class BatchPublisher(Protocol):
    """Optional for a backend: one whose every commit costs (a transaction, a flush) stores
    several events in one. `publish_all` uses it where present."""

    async def publish_many(
        self, events: Sequence[Publication], *, now: float | None = None
    ) -> list[JobEvent]:
        """Publish `events` in order, all or none; JobNotFound if one names no job."""
        ...


async def publish_all(
    store: JobStore, events: Sequence[Publication], *, now: float | None = None
) -> list[JobEvent]:
    """Publish `events` in order: in one transaction where the store can, else one by one."""
    if isinstance(store, BatchPublisher):
        return await store.publish_many(events, now=now)
    return [await store.publish(job_id, kind, data, now=now) for job_id, kind, data in events]


# --- waiting for events -----------------------------------------------------------------------


ANY_JOB = "*"
"""The key under which `EventWaiters` wakes whoever waits for an event of any job (no job id
holds a '*')."""

WaitKey = str | tuple[str, str]
"""A job id, ANY_JOB, or `status_key(job_id)`."""


def status_key(job_id: str) -> tuple[str, str]:
    """The key under which `EventWaiters` wakes whoever waits only for a job's status events."""
    return ("status", job_id)


class EventWaiters:
    """Wakes the coroutines waiting for a job's next event, in this process only.

    One asyncio.Event per key with waiters (a job, any job, or only a job's status events):
    publishing sets it and drops it, so the next waiter gets a fresh one. A backend shared
    between processes (SQLite) does not see the other's publishes here; it re-reads once when
    the wait times out.
    """

    def __init__(self) -> None:
        self._events: dict[WaitKey, asyncio.Event] = {}
        self._waiting: dict[WaitKey, int] = {}
        self.closed = False

    @contextmanager
    def watch(self, key: WaitKey) -> Iterator[asyncio.Event]:
        """Register before looking for events, so that none can slip in between."""
        event = self._events.setdefault(key, asyncio.Event())
        if self.closed:
            event.set()
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            yield event
        finally:
            left = self._waiting.pop(key) - 1
            if left:
                self._waiting[key] = left
            else:
                self._events.pop(key, None)

    def notify(self, job_id: str, kind: str | None = None) -> None:
        """`job_id` has a new event of `kind` (None: unknown, which may be a status)."""
        keys: tuple[WaitKey, ...] = (job_id, ANY_JOB)
        if kind is None or kind == "status":
            keys = (*keys, status_key(job_id))
        for key in keys:
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    def notify_all(self) -> None:
        """Wake every waiter to look again: some events may have gone unannounced (a backend
        that lost its notifications connection)."""
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    def close(self) -> None:
        """Wake everyone: a closed store has nothing more to say."""
        self.closed = True
        for event in self._events.values():
            event.set()
        self._events.clear()


class EventReader(Protocol):
    """What the event waits below read: a store's event queries."""

    async def events(self, job_id: str, *, after: int = 0, limit: int = 1000) -> list[JobEvent]: ...

    async def events_since(self, after: int, *, limit: int = 500) -> list[JobEvent]: ...


async def wait_for_events(
    store: EventReader, waiters: EventWaiters, job_id: str, *, after: int, timeout: float
) -> list[JobEvent]:
    """`wait_events` for any backend that publishes through `waiters`."""
    return await _wait(waiters, job_id, lambda: store.events(job_id, after=after), timeout)


async def wait_for_any_events(
    store: EventReader, waiters: EventWaiters, *, after: int, timeout: float, limit: int
) -> list[JobEvent]:
    """`wait_events_since` for any backend that publishes through `waiters`."""
    return await _wait(waiters, ANY_JOB, lambda: store.events_since(after, limit=limit), timeout)


class JobReader(Protocol):
    """What `wait_for_end` reads: a store's `get`."""

    async def get(self, job_id: str) -> Job: ...


async def wait_for_end(
    store: JobReader, waiters: EventWaiters, job_id: str, *, timeout: float
) -> Job:
    """`wait_end` for any backend that publishes through `waiters`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with waiters.watch(status_key(job_id)) as changed:
            job = await store.get(job_id)
            remaining = deadline - loop.time()
            if job.terminal or remaining <= 0 or waiters.closed:
                return job
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                # A last look: another process sharing the store may have ended it meanwhile.
                return await store.get(job_id)


async def _wait(
    waiters: EventWaiters,
    key: WaitKey,
    look: Callable[[], Awaitable[list[JobEvent]]],
    timeout: float,
) -> list[JobEvent]:
    """Look for events, and while there are none, wait for `key` to be notified (up to
    `timeout` seconds in all)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with waiters.watch(key) as event:
            found = await look()
            remaining = deadline - loop.time()
            if found or remaining <= 0:
                return found
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                # A last look: another process sharing the store may have published meanwhile.
                return await look()
        if waiters.closed:
            return []
