"""Taking a claimed job to its instance: its model files made ready (in a task of its own, as
downloads take minutes), its outputs pointed into the job's folder, the prompt submitted.

Whatever goes wrong on the way ends that attempt (through the lane, which frees the slot),
never the lane. The prompt id was chosen before the claim, so a message ComfyUI sends before
the submit returns (fast graphs finish in milliseconds) still finds its slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from comfyfleet.comfy import LARGE_PROMPT_NODES
from comfyfleet.jobs._confine import namespace_outputs
from comfyfleet.jobs._failures import JobError, attempt_error
from comfyfleet.jobs._model import Job
from comfyfleet.jobs._prepare import NothingToRun, PrepareFailed

if TYPE_CHECKING:
    from comfyfleet.jobs._lane import Lane

log = logging.getLogger("comfyfleet.jobs")


class Starter:
    """Starts one lane's claimed jobs."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.preparing: set[asyncio.Task[None]] = set()

    def _at(self, doing: str) -> dict[str, Any]:
        return {"instance": self.lane.index, "doing": doing, "from_job": True}

    async def start(self, job: Job, prompt_id: str) -> bool:
        """Prepare (in a task of its own) or submit a job just claimed for `prompt_id`; False
        when its attempt ended before either could begin."""
        lane = self.lane
        queued_s = max(0.0, (job.started_at or time.time()) - job.queued_at)
        lane.watch.phase("queued", queued_s)
        log.info("job %s claimed (attempt %d, queued %.3fs)", job.id, job.attempts, queued_s)
        try:
            needs_preparing = lane.prepare is not None and lane.prepare.needed(job)
            if lane.remote is not None:  # its models are its own; installs are ours
                needs_preparing = needs_preparing and job.options.install_preset is not None
        except Exception as exc:  # the job's graph broke the check: its attempt ends here
            await lane.fail_attempt(prompt_id, attempt_error(exc, **self._at("preparing")))
            return False
        if needs_preparing:
            task = asyncio.create_task(self._prepare_then_submit(job, prompt_id))
            lane.in_flight[prompt_id].enter("preparing")
            lane.in_flight[prompt_id].task = task
            self.preparing.add(task)
            task.add_done_callback(self.preparing.discard)
        else:
            await self.submit(job, prompt_id)
        return True

    async def _prepare_then_submit(self, job: Job, prompt_id: str) -> None:
        """Model downloads can take minutes: they run beside the lane, holding the slot."""
        lane = self.lane
        assert lane.prepare is not None
        began = time.monotonic()
        try:
            try:
                workflow = await lane.prepare(job, lane.store)
            finally:
                lane.watch.phase("downloading", time.monotonic() - began)
        except NothingToRun as done:
            if lane.leave(prompt_id) is not None:
                await lane.store.complete(job.id, lane.worker, done.outputs, attempt=job.attempts)
                lane.fill_soon()
            return
        except PrepareFailed as exc:
            await lane.fail_attempt(prompt_id, JobError.from_dict(exc.error, exc.retryable))
            lane.fill_soon()
            return
        except Exception as exc:
            await lane.fail_attempt(prompt_id, attempt_error(exc, **self._at("preparing")))
            lane.fill_soon()
            return
        if prompt_id in lane.in_flight:  # not cancelled or lost meanwhile
            await self.submit(job, prompt_id, workflow)

    async def submit(
        self, job: Job, prompt_id: str, workflow: dict[str, Any] | None = None
    ) -> None:
        """Send the job to ComfyUI. Whatever goes wrong ends this attempt, never the lane."""
        lane = self.lane
        try:
            graph = job.workflow if workflow is None else workflow
            if lane.remote is None and len(graph) > LARGE_PROMPT_NODES:
                graph = await asyncio.to_thread(namespace_outputs, graph, job.id)
            elif lane.remote is None:
                graph = namespace_outputs(graph, job.id)
            else:
                graph = await lane.remote.graph_for(graph, job.id)
            extra = job.options.extra_data
            if (flight := lane.in_flight.get(prompt_id)) is not None:
                flight.sent_at = time.monotonic()
            await lane.client.submit(
                graph,
                client_id=lane.client_id,
                prompt_id=prompt_id,
                extra_data=None if extra is None else dict(extra),
            )
        except Exception as exc:
            await lane.fail_attempt(prompt_id, attempt_error(exc, **self._at("submitting")))
            return
        flight = lane.in_flight.get(prompt_id)
        if flight is not None:
            flight.enter("submitted")
            flight.task = None
