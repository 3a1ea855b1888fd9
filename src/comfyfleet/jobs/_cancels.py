"""Stopping the jobs a client cancelled, and those past their running timeout, on the instance
that runs them: a round of the dispatcher's cancel loop over one lane."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from comfyfleet.logs import log_context

if TYPE_CHECKING:
    from comfyfleet.jobs._lane import Lane

log = logging.getLogger("comfyfleet.jobs")


async def stop_cancelled(lane: Lane, now: float | None = None) -> None:
    """Stop the lane's jobs a client asked to cancel, and those past their timeout. Whether
    ComfyUI is already running a prompt cannot be known for sure (its start message may be in
    flight), so both are done: remove it from ComfyUI's queue, then interrupt it (a no-op
    unless it is the one running). Late messages for its prompt are ignored."""
    now = time.time() if now is None else now
    for flight in list(lane.in_flight.values()):
        job = await lane.store.get(flight.job.id)
        timeout = None if job.cancel_requested else flight.timed_out(lane.limits, now)
        if not job.cancel_requested and timeout is None:
            continue
        with log_context(job_id=job.id, instance=lane.index):
            lane.leave(flight.prompt_id)
            await lane.progress.flush()  # its events before its end
            await lane.stop_in_comfy(job.id, flight.prompt_id)
            if timeout is None:
                log.info("job %s cancelled on its instance", job.id)
                await lane.store.mark_cancelled(job.id, lane.worker)
            else:
                log.info("job %s: %s", job.id, timeout["message"])
                await lane.store.fail(
                    job.id, lane.worker, timeout, retryable=False, attempt=flight.job.attempts
                )
        lane.fill_soon()
