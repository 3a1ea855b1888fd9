"""`GET /v1/stats`: the queue now, and throughput and latency over a recent window.

What a dashboard draws and an operator checks at a glance: jobs waiting by priority and
running, jobs ended per bucket (succeeded, failed, cancelled), and latency percentiles. Counts
only, of every key's jobs (no job is named), so any key that may read sees them. The figures
come from the store (`queue_depths`, `endings`), so every gateway of a fleet says the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from comfyfleet.auth import READ
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._service import Service
from comfyfleet.gateway._stats import summarize
from comfyfleet.gateway._tenancy import needs
from comfyfleet.jobs import JobStatus

MAX_BUCKETS = 1440
MAX_ENDINGS = 20_000
"""The newest jobs a window reads at most: past that the counts say `truncated`."""


def stats_router(service: Service, *, clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(tags=["fleet"])
    store = service.store

    @router.get(
        "/v1/stats",
        summary="Queue depth, throughput and latency percentiles over a recent window",
        dependencies=[Depends(needs(READ))],
    )
    async def stats(
        window_s: Annotated[float, Query(ge=60, le=86_400)] = 3600,
        bucket_s: Annotated[float, Query(ge=10, le=3600)] = 60,
    ) -> dict[str, Any]:
        """`buckets` are oldest first and end now; latencies are in seconds (`total_s`: from
        submit to end, `running_s`: from the last start to the end)."""
        if window_s / bucket_s > MAX_BUCKETS:
            raise ApiError(
                400,
                "too_many_buckets",
                f"window_s / bucket_s must be at most {MAX_BUCKETS}",
                {"window_s": window_s, "bucket_s": bucket_s},
            )
        now = clock()
        endings = await store.endings(since=now - window_s, limit=MAX_ENDINGS)
        depths = await store.queue_depths()
        summary = summarize(endings, now=now, window_s=window_s, bucket_s=bucket_s)
        summary["truncated"] = len(endings) >= MAX_ENDINGS
        summary["queue"] = {
            "queued": sum(depths.values()),
            "running": await store.count(JobStatus.RUNNING),
            "by_priority": [
                {"priority": priority, "queued": depths[priority]}
                for priority in sorted(depths, reverse=True)
            ],
        }
        return summary

    return router
