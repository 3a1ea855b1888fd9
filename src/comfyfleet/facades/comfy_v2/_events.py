"""`GET /api/v2/jobs/{id}/events`: a job's live events as the contract's Server-Sent Events.

The contract's catalog: `status` `{status, queue_position}`, `progress` (a complete snapshot,
see `_progress`), `preview` `{node_id, content_type, data_base64}`, `output` (an `Output`, as the
job lists it), `log` `{level, message}`. The stream is live, with no cursor and no replay: the
poll (`GET /jobs/{id}`) is the source of truth, and a client that reconnects gets the state now.

So a stream starts with a snapshot, not with history: the store's events so far are folded
(into the progress count, silently), then the job is read once more and its state sent: its
`status` (and `progress` while running). A job that has ended by then gets its outputs (or its
error as a `log`) and its final status, and the stream ends, however little time there was
between the job's end and the stream's start: nothing waits for an event that already happened.
A running job's stream then follows the gateway's `JobFeed` from the last folded event on, and
ends right after the final `status`. Idle streams get a comment line every
`serve.sse_heartbeat_s`; preview frames are sent at most `PREVIEW_INTERVAL_S` apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from comfyfleet.auth import READ
from comfyfleet.facades.comfy_v2._context import V2, base_url, queue_position
from comfyfleet.facades.comfy_v2._errors import translated
from comfyfleet.facades.comfy_v2._progress import Progress, fold_backlog
from comfyfleet.facades.comfy_v2._views import v2_error_of, v2_status
from comfyfleet.gateway import (
    Caller,
    ClientEvent,
    EventStreamResponse,
    JobFeed,
    needs,
)
from comfyfleet.jobs import Job, JobStatus, JobStoreError

HEARTBEAT = b": keep-alive\n\n"
PREVIEW_INTERVAL_S = 0.5
_STATUS = {"cancelled": "canceled"}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def events_routes(router: APIRouter, v2: V2) -> None:
    @router.get(
        "/api/v2/jobs/{job_id}/events",
        summary="Follow a job live (Server-Sent Events, Comfy API v2 catalog)",
        response_class=EventStreamResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    @translated
    async def job_events(
        job_id: str, request: Request, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> Response:
        job = await v2.job(job_id, caller)
        slot = v2.service.streams.take(caller.owner)
        return EventStreamResponse(
            _Stream(v2, job, base_url(request)).messages(), on_close=slot.release
        )


class _Stream:
    """One client's stream of one job."""

    def __init__(self, v2: V2, job: Job, base: str) -> None:
        self.v2 = v2
        self.job = job
        self.base = base
        self.progress = Progress.of(job)
        self.last_preview = 0.0

    async def messages(self) -> AsyncGenerator[bytes, None]:
        store = self.v2.service.store
        try:
            after = await fold_backlog(store, self.job, self.progress)
            job = await store.get(self.job.id)
            yield await self._snapshot(job)
            if job.terminal:
                return
            async for chunk in self._follow(after):
                yield chunk
        except JobStoreError:
            return  # the store went away: the client polls, which says what it can

    async def _snapshot(self, job: Job) -> bytes:
        if job.terminal:
            return self._ending(job)
        position = None
        if job.status == JobStatus.QUEUED:
            position = await queue_position(self.v2.service.store, job.id)
        status = v2_status(job)
        chunk = sse("status", {"status": status, "queue_position": position})
        if job.status == JobStatus.RUNNING:
            chunk += sse("progress", self.progress.snapshot())
        return chunk

    def _ending(self, job: Job) -> bytes:
        chunk = b""
        for output in self.v2.outputs(job, self.base):
            chunk += sse("output", output)
        error = v2_error_of(job)
        if error is not None:
            chunk += sse("log", {"level": "error", "message": error["message"]})
        return chunk + sse("status", {"status": v2_status(job), "queue_position": None})

    async def _follow(self, after: int) -> AsyncGenerator[bytes, None]:
        service = self.v2.service
        feed = JobFeed(
            service.store,
            self.job.id,
            view=self._view,
            after=after,
            previews=service.previews,
            heartbeat_s=service.settings.sse_heartbeat_s,
            closing=service.closing,
        )
        async with feed:
            async for batch in feed:
                if not batch:
                    yield HEARTBEAT
                    continue
                chunk = b"".join(self._translate(event) for event in batch)
                if chunk:
                    yield chunk

    def _view(self, job: Job) -> dict[str, Any]:
        """What `JobFeed` puts into the `output` and `error` events before a final status."""
        return {
            "outputs": self.v2.outputs(job, self.base),
            "attempts": job.attempts,
            "error": v2_error_of(job),
        }

    def _translate(self, event: ClientEvent) -> bytes:
        kind, data = event.event, event.data
        if kind == "status":
            self.progress.client(kind, data)
            status = str(data.get("status"))
            chunk = b""
            if data.get("retry"):
                chunk = sse("log", {"level": "warning", "message": "the attempt failed; retrying"})
            return chunk + sse(
                "status", {"status": _STATUS.get(status, status), "queue_position": None}
            )
        if kind == "output":
            return sse("output", {k: v for k, v in data.items() if k not in ("index", "count")})
        if kind == "error":
            return sse("log", {"level": "error", "message": str(data.get("message", ""))})
        if kind == "cancel_requested":
            return sse("status", {"status": "canceling", "queue_position": None})
        if kind == "started":
            message = f"started on instance {data.get('instance')}"
            return sse("log", {"level": "info", "message": message})
        if kind in ("executing", "executed", "progress"):
            changed = self.progress.client(kind, data)
            return sse("progress", self.progress.snapshot()) if changed else b""
        if kind == "preview":
            return self._preview(data)
        return b""

    def _preview(self, data: dict[str, Any]) -> bytes:
        now = time.monotonic()
        if now - self.last_preview < PREVIEW_INTERVAL_S:
            return b""
        self.last_preview = now
        image_format = str(data.get("format") or "jpeg").lower()
        return sse(
            "preview",
            {
                "node_id": self.progress.current or "",
                "content_type": f"image/{image_format}",
                "data_base64": data.get("base64", ""),
            },
        )
