"""What every v2 route works with: the gateway's `Service`, the asset store and the hash index,
and the one way a stored job becomes the contract's `Job` (so the poll, the list, the submit and
cancel answers and the stream's outputs can never disagree)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from comfyfleet.assets import AssetStore
from comfyfleet.facades.comfy_v2._errors import not_found
from comfyfleet.facades.comfy_v2._hashes import HashIndex
from comfyfleet.facades.comfy_v2._progress import job_progress
from comfyfleet.facades.comfy_v2._views import v2_job, v2_outputs
from comfyfleet.gateway import Caller, Service, visible_job
from comfyfleet.jobs import Job, JobNotFound, JobStatus, JobStore


async def queue_position(store: JobStore, job_id: str) -> int | None:
    """The contract's 1-based place in the queue (1: next to run), from the store's count of
    jobs ahead; None when the job is not queued."""
    ahead = await store.queue_position(job_id)
    return None if ahead is None else ahead + 1


def base_url(request: Request) -> str:
    """The absolute base the client reached us on (scheme, host and any mount prefix): every
    URL in an answer is built on it, so links lead back to the same origin."""
    return str(request.base_url).rstrip("/")


@dataclass(frozen=True)
class V2:
    service: Service
    assets: AssetStore
    hashes: HashIndex

    @property
    def retention_s(self) -> float:
        """How far ahead `expires_at` and `url_expires_at` lie: the fleet deletes no job, so
        this is a lower bound, the same horizon as an Idempotency-Key's."""
        return self.service.settings.idempotency_ttl_s

    async def job(self, job_id: str, caller: Caller) -> Job:
        """The caller's job, or 404 `not_found` (also for another key's job)."""
        try:
            return await visible_job(self.service.store, job_id, caller)
        except JobNotFound as exc:
            raise not_found("job", job_id) from exc

    async def view(self, job: Job, base: str, *, full: bool = True) -> dict[str, Any]:
        """The contract's `Job`. `full` adds the queue position and the folded progress (what a
        poll shows); a listing leaves those reads out and shows them as null."""
        store = self.service.store
        position = None
        progress = None
        if full:
            if job.status == JobStatus.QUEUED:
                position = await queue_position(store, job.id)
            progress = await job_progress(store, job)
        return v2_job(
            job,
            base,
            now=time.time(),
            retention_s=self.retention_s,
            queue_position=position,
            progress=progress,
        )

    def outputs(self, job: Job, base: str) -> list[dict[str, Any]]:
        return v2_outputs(job, base, time.time(), self.retention_s)
