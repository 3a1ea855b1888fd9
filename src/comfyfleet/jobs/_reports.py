"""Telling the store how an attempt ended, even while the store cannot be reached.

How an attempt ended (its outputs, or its error) is the one thing a worker must not drop when
its store is away: ComfyUI's work is done and the outputs are on disk. The lane reports it at
once; when the store does not answer, the report is kept in memory and sent again with a
growing delay (`RETRY_FIRST_S`, doubling up to `RETRY_MAX_S`) until the store answers. If the
worker's lease outlived the outage, the store takes the report as if nothing had happened. If it
lapsed meanwhile, the job went back to the queue and may have finished elsewhere: the store
refuses the report, which is logged and dropped, so no job ends twice.

Progress (events, running info) is not kept: it describes a moment that has passed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from comfyfleet.jobs._model import Job, JobNotFound, JobStoreError

log = logging.getLogger("comfyfleet.jobs")

Report = Callable[[], Awaitable[Job | None]]
"""One try at a report: the job as the store changed it, or None when the store refused."""

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


def unreachable(exc: BaseException) -> bool:
    """The store failed to answer (as opposed to answering no: an unknown job)."""
    return isinstance(exc, JobStoreError) and not isinstance(exc, JobNotFound)


async def until_answered(report: Report, *, job_id: str, what: str) -> Job | None:
    """`report` until the store answers; the answer (None: refused, and logged)."""
    delay = RETRY_FIRST_S
    failing = False
    while True:
        try:
            answer = await report()
        except Exception as exc:
            if not unreachable(exc):
                raise
            if not failing:
                log.warning(
                    "job %s: reporting its %s failed (%s); keeping it and trying again",
                    job_id,
                    what,
                    exc,
                )
            failing = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        if answer is None:
            log_refused(job_id, what)
        elif failing:
            log.warning("job %s: the store is back and took its %s", job_id, what)
        return answer


def log_refused(job_id: str, what: str) -> None:
    log.warning(
        "job %s: the store refused its %s: this worker no longer holds the job (its lease "
        "lapsed, so the job went back to the queue, or it was cancelled); dropping it",
        job_id,
        what,
    )
