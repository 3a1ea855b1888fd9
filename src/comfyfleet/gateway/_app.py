"""The HTTP gateway (`/v1`): submit, inspect, list and cancel jobs; fetch outputs; health.

Routes read from and write to the job store only; the dispatcher (in the same process for
`comfyfleet serve`, elsewhere later) does the running. Every error a client can cause is a 4xx
with `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfyfleet import __version__
from comfyfleet.gateway._errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
)
from comfyfleet.gateway._service import Service
from comfyfleet.gateway._views import job_view
from comfyfleet.jobs import (
    TERMINAL,
    GraphError,
    Job,
    JobConflict,
    JobNotFound,
    JobStatus,
    NewJob,
    QueueFull,
    check_workflow,
)

_SMALL_FILE = 512 * 1024
"""Outputs up to this size are answered from one read; larger ones are streamed."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _wait_seconds(wait: bool, prefer: str | None, limit: float) -> float | None:
    if prefer:
        match = re.search(r"wait=(\d+(?:\.\d+)?)", prefer)
        if match:
            return min(float(match.group(1)), limit)
    return limit if wait else None


async def _read_body(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    raw = await request.body()
    if len(raw) > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    return body


def _new_job(body: dict[str, Any], default_attempts: int) -> NewJob:
    if "workflow" not in body:
        raise ApiError(422, "invalid_request", "'workflow' is required (an API-format graph)")
    job_id = body.get("id") or uuid.uuid4().hex
    if not isinstance(job_id, str) or not _ID.match(job_id):
        raise ApiError(
            422, "invalid_request", "'id' must be 1-128 letters, digits, '.', '_' or '-'"
        )
    priority = body.get("priority", 0)
    attempts = body.get("max_attempts", default_attempts)
    if not isinstance(priority, int) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
        raise ApiError(
            422,
            "invalid_request",
            "'priority' must be an integer and 'max_attempts' an integer from 1 to 10",
        )
    canonical = json.dumps(
        {"workflow": body["workflow"], "priority": priority}, sort_keys=True, separators=(",", ":")
    )
    return NewJob(
        id=job_id,
        workflow=body["workflow"],
        priority=priority,
        max_attempts=attempts,
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
    )


async def _check(service: Service, workflow: Any) -> None:
    try:
        check_workflow(workflow)
        if service.node_types is not None:
            wanted = {str(n.get("class_type")) for n in workflow.values()}
            known = await service.node_types.known(wanted)
            check_workflow(workflow, known_classes=known)
    except GraphError as exc:
        raise ApiError(
            exc.status, "invalid_workflow", exc.message, {**exc.details(), "hint": exc.hint}
        ) from exc


async def _wait_for_end(service: Service, job_id: str, seconds: float) -> Job:
    deadline = time.monotonic() + seconds
    after = 0
    job = await service.store.get(job_id)
    while job.status not in TERMINAL and time.monotonic() < deadline:
        events = await service.store.wait_events(
            job_id, after=after, timeout=deadline - time.monotonic()
        )
        if events:
            after = events[-1].seq
        if not events or any(event.kind == "status" for event in events):
            job = await service.store.get(job_id)  # progress events do not change the status
    return job


async def _enqueue(service: Service, new: NewJob) -> tuple[Job, bool]:
    """Store the job, then put it on an idle instance at once if this process has one."""
    try:
        job, created = await service.store.enqueue(new, max_queued=service.settings.max_queued)
    except QueueFull as exc:
        raise ApiError(
            429,
            "queue_full",
            f"the queue holds {exc.limit} jobs; try later",
            headers={"Retry-After": str(service.settings.retry_after_s)},
        ) from exc
    except JobConflict as exc:
        raise ApiError(409, "job_conflict", exc.message) from exc
    if created and service.dispatch is not None:
        await service.dispatch()
    elif created:
        service.notify()
    return job, created


def create_app(service: Service) -> FastAPI:
    app = FastAPI(
        title="comfyfleet",
        version=__version__,
        description="Run ComfyUI workflows on a supervised fleet of instances.",
    )
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    _add_job_routes(app, service)
    _add_other_routes(app, service)
    return app


def _add_job_routes(app: FastAPI, service: Service) -> None:
    store = service.store

    async def view(job: Job, inline: bool = False) -> dict[str, Any]:
        position = await store.queue_position(job.id) if job.status == JobStatus.QUEUED else None
        return job_view(job, queue_position=position, output_dir=service.output_dir, inline=inline)

    async def get_job(job_id: str) -> Job:
        try:
            return await store.get(job_id)
        except JobNotFound as exc:
            raise ApiError(404, "job_not_found", f"no job '{job_id}'") from exc

    @app.post("/v1/jobs", status_code=202, summary="Submit a workflow")
    async def submit(
        request: Request,
        wait: bool = False,
        inline: bool = False,
        prefer: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        body = await _read_body(request, service.settings.max_body_bytes)
        new = _new_job(body, service.settings.max_attempts)
        await _check(service, new.workflow)
        job, created = await _enqueue(service, new)
        seconds = _wait_seconds(wait, prefer, service.settings.max_wait_s)
        if seconds is not None:
            job = await _wait_for_end(service, job.id, seconds)
        status = 200 if job.status in TERMINAL else (202 if created else 200)
        return JSONResponse(await view(job, inline), status_code=status)

    @app.get("/v1/jobs/{job_id}", summary="A job's status, progress, outputs and error")
    async def read_job(job_id: str, inline: bool = False) -> dict[str, Any]:
        return await view(await get_job(job_id), inline)

    @app.get("/v1/jobs", summary="List jobs, newest first")
    async def list_jobs(
        status: JobStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        if cursor is not None and not cursor.isdigit():
            raise ApiError(400, "invalid_cursor", "cursor must come from a previous answer")
        jobs, next_cursor = await store.list_jobs(status=status, limit=limit, cursor=cursor)
        return {"jobs": [job_view(j) for j in jobs], "next_cursor": next_cursor}

    @app.post("/v1/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    async def cancel(job_id: str) -> dict[str, Any]:
        await get_job(job_id)
        return await view(await store.cancel(job_id))


def _add_other_routes(app: FastAPI, service: Service) -> None:
    store = service.store

    @app.get("/v1/outputs/{job_id}/{path:path}", summary="Download an output file")
    async def output(job_id: str, path: str) -> Response:
        parts = PurePosixPath(path).parts
        if not _ID.match(job_id) or not parts or ".." in parts or path.startswith("/"):
            raise ApiError(400, "invalid_path", "output paths must stay inside the job's folder")
        file = service.output_dir / job_id / Path(*parts)
        if not file.is_file():
            raise ApiError(404, "output_not_found", f"job '{job_id}' has no output '{path}'")
        media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.stat().st_size <= _SMALL_FILE:
            # One read on the loop costs less than FileResponse's hop to a worker thread.
            return Response(file.read_bytes(), media_type=media)
        return FileResponse(file, media_type=media)

    @app.get("/v1/instances", summary="The ComfyUI instances and their states")
    async def instances() -> dict[str, Any]:
        return {"instances": [s.to_dict() for s in service.instances()]}

    @app.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="At least one instance is ready and the queue has room")
    async def ready() -> JSONResponse:
        serving = len(service.serving_urls())
        queued = await store.count(JobStatus.QUEUED)
        ok = serving > 0 and queued < service.settings.max_queued
        return JSONResponse(
            {"ready": ok, "instances_serving": serving, "queued": queued},
            status_code=200 if ok else 503,
        )
