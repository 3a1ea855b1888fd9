"""Ending attempts from outside ComfyUI's messages: a client's cancel, a running timeout.

Whether ComfyUI is already running a prompt cannot be known for sure (its start message may be
in flight), so both are done: the prompt is removed from ComfyUI's queue, then interrupted (a
no-op unless it is the one running). Late messages for its prompt find no slot and are ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from comfyfleet.comfy import ComfyClient, ComfyError
from comfyfleet.jobs._flight import InFlight
from comfyfleet.jobs._limits import JobLimits
from comfyfleet.jobs._store import JobStore
from comfyfleet.logs import log_context

log = logging.getLogger("comfyfleet.jobs")


class Stopper:
    """Stops one instance's prompts."""

    def __init__(
        self, store: JobStore, worker: str, index: int, client: ComfyClient, limits: JobLimits
    ) -> None:
        self.store = store
        self.worker = worker
        self.index = index
        self.client = client
        self.limits = limits

    async def check(
        self,
        in_flight: Mapping[str, InFlight],
        leave: Callable[[str], object],
        now: float | None = None,
    ) -> int:
        """Stop the jobs of `in_flight` a client asked to cancel, and those past their timeout,
        freeing their slots with `leave`; how many were stopped."""
        now = time.time() if now is None else now
        stopped = 0
        for flight in list(in_flight.values()):
            job = await self.store.get(flight.job.id)
            timeout = None if job.cancel_requested else flight.timed_out(self.limits, now)
            if not job.cancel_requested and timeout is None:
                continue
            with log_context(job_id=job.id, instance=self.index):
                leave(flight.prompt_id)
                await self.in_comfy(job.id, flight.prompt_id)
                if timeout is None:
                    log.info("job %s cancelled on its instance", job.id)
                    await self.store.mark_cancelled(job.id, self.worker)
                else:
                    log.info("job %s: %s", job.id, timeout["message"])
                    await self.store.fail(
                        job.id, self.worker, timeout, retryable=False, attempt=flight.job.attempts
                    )
            stopped += 1
        return stopped

    async def in_comfy(self, job_id: str, prompt_id: str) -> None:
        """Take a prompt out of ComfyUI's queue and interrupt it if it is the one running (a
        no-op otherwise), so an attempt that ended here does not go on there."""
        try:
            await self.client.delete_queued([prompt_id])
            await self.client.interrupt(prompt_id)
        except ComfyError as exc:
            log.warning("stopping job %s on instance %s: %s", job_id, self.index, exc)
