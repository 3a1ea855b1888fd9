"""What retention asks of the in-memory job store: old finished jobs, the live ones, forgetting.

A mixin of `MemoryJobStore` (which owns the dictionaries and the lock), kept apart so that the
store's main module stays about the queue, as `_sqlite_retention` is for the SQLite store.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

from comfyfleet.jobs import _rules as rules
from comfyfleet.jobs._model import TERMINAL, FinishedJob, Job, JobEvent, JobStatus
from comfyfleet.jobs._outputs import outputs_to_json
from comfyfleet.jobs._rows import stored_bytes


class MemoryRetention:
    """The retention half of `MemoryJobStore`."""

    _jobs: dict[str, Job]
    _ids: dict[JobStatus, dict[str, None]]
    _owned: dict[str, dict[str, None]]
    _events: dict[str, list[JobEvent]]
    _locked: Callable[[], asyncio.Lock]
    _with: Callable[[JobStatus], list[Job]]
    _out: Callable[[Job], Job]

    async def forget(self, job_ids: Sequence[str]) -> int:
        async with self._locked():
            gone = 0
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None or not job.terminal:
                    continue
                del self._ids[job.status][job_id]
                del self._jobs[job_id]
                self._events.pop(job_id, None)
                if job.owner is not None:
                    self._owned.get(job.owner, {}).pop(job_id, None)
                gone += 1
            return gone

    async def finished_jobs(
        self, before: float, *, after: tuple[float, int] | None = None, limit: int = 500
    ) -> list[FinishedJob]:
        rules.check_limit(limit)
        start = (-math.inf, 0) if after is None else after
        async with self._locked():
            ended = [
                job
                for status in TERMINAL
                for job in self._with(status)
                if job.finished_at is not None
                and job.finished_at < before
                and (job.finished_at, job.seq) > start
            ]
            ended.sort(key=lambda job: (job.finished_at, job.seq))
            return [self._finished(job) for job in ended[:limit]]

    async def live_jobs(self, *, after: int = 0, limit: int = 500) -> list[Job]:
        rules.check_limit(limit)
        async with self._locked():
            live = [
                job
                for status in (JobStatus.QUEUED, JobStatus.RUNNING)
                for job in self._with(status)
                if job.seq > after
            ]
            live.sort(key=lambda job: job.seq)
            return [self._out(job) for job in live[:limit]]

    def _finished(self, job: Job) -> FinishedJob:
        events = self._events.get(job.id, [])
        assert job.finished_at is not None
        return FinishedJob(
            id=job.id,
            seq=job.seq,
            status=job.status,
            finished_at=job.finished_at,
            events=len(events),
            bytes=stored_bytes(
                job.workflow,
                job.options.to_json(),
                outputs_to_json(job.outputs),
                job.error,
                None if job.progress is None else job.progress.to_json(),
            ),
            event_bytes=stored_bytes(*(event.data for event in events)),
            last_event=events[-1].seq if events else 0,
        )
