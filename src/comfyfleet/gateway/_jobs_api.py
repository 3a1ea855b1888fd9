"""The job routes of `/v1`: submit (sync or async), dry-run, read, list, cancel, outputs.

Routes read from and write to the job store only; the dispatcher (in the same process for
`comfyfleet serve`) does the running. A submission is checked before anything is stored: the
body's shape, the graph (every node known to the instances, every link pointing at a node),
and its media inputs, which are fetched and stored once, so a job never fails later for
something the client could have been told at once.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from comfyfleet.auth import READ, SUBMIT
from comfyfleet.gateway._body import read_json_body
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._intake import (
    check_graph,
    job_answer,
    parse_job,
    submit_job,
    wait_for_end,
)
from comfyfleet.gateway._service import Service
from comfyfleet.gateway._submit import JOB_ID, JOB_REQUEST_SCHEMA, idempotent_id, json_limits
from comfyfleet.gateway._tenancy import Caller, needs, visible_job
from comfyfleet.gateway._views import job_view
from comfyfleet.jobs import TERMINAL, InvalidCursor, Job, JobNotFound, JobStatus

_SMALL_FILE = 512 * 1024
"""Outputs up to this size are answered from one read; larger ones are streamed."""


def jobs_router(service: Service) -> APIRouter:
    router = APIRouter(tags=["jobs"])
    _submit_routes(router, service)
    _read_routes(router, service)
    return router


def _submit_routes(router: APIRouter, service: Service) -> None:
    settings = service.settings

    body_doc = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": JOB_REQUEST_SCHEMA}},
        }
    }

    @router.post("/v1/jobs", status_code=202, summary="Submit a workflow", openapi_extra=body_doc)
    async def submit(
        request: Request,
        caller: Annotated[Caller, Depends(needs(SUBMIT))],
        wait: bool = False,
        inline: bool = False,
        prefer: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """202 with the job's id and URLs; with `?wait=true` or `Prefer: wait=N`, 200 with
        the outputs once the job ends (base64 inline with `?inline=true`). The same
        `Idempotency-Key` with the same body answers with the same job."""
        body = await read_json_body(request, json_limits(settings))
        derived = None
        if idempotency_key is not None:
            derived = idempotent_id(idempotency_key, caller.owner, service.idempotency_secret)
        new = replace(await parse_job(service, body, derived), owner=caller.owner)
        # Only an id the client chose can name a stored job; a fresh one skips the lookup.
        chosen = derived is not None or body.get("id") is not None
        job, created = await submit_job(service, new, caller, chosen=chosen)
        seconds = _wait_seconds(wait, prefer, settings.max_wait_s)
        if seconds is not None:
            job = await wait_for_end(service, job.id, seconds)
        status = 200 if job.status in TERMINAL or seconds is not None else 202
        headers = {} if created or idempotency_key is None else {"Idempotent-Replayed": "true"}
        content = await job_answer(service, job, inline)
        return JSONResponse(content, status_code=status, headers=headers)

    @router.post(
        "/v1/jobs:validate",
        summary="Check a workflow without running it",
        openapi_extra=body_doc,
        dependencies=[Depends(needs(SUBMIT))],
    )
    async def validate(request: Request) -> dict[str, Any]:
        """The same checks as a submission (shape, node classes, links, options), without
        fetching media or storing anything: 200 `{"valid": true, ...}` or the 4xx a submit
        would get."""
        body = await read_json_body(request, json_limits(settings))
        new = await parse_job(service, body, None)
        await check_graph(service, new.workflow)
        return {"valid": True, "nodes": len(new.workflow), "options": new.options.to_json()}


def _read_routes(router: APIRouter, service: Service) -> None:
    store = service.store

    @router.get("/v1/jobs/{job_id}", summary="A job's status, progress, outputs and error")
    async def read_job(
        job_id: str, caller: Annotated[Caller, Depends(needs(READ))], inline: bool = False
    ) -> dict[str, Any]:
        return await job_answer(service, await _get(service, job_id, caller), inline)

    @router.get("/v1/jobs", summary="List jobs, newest first")
    async def list_jobs(
        caller: Annotated[Caller, Depends(needs(READ))],
        status: JobStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        try:
            jobs, next_cursor = await store.list_jobs(
                status=status, limit=limit, cursor=cursor, owner=caller.list_filter
            )
        except InvalidCursor as exc:
            message = "cursor must come from a previous answer"
            raise ApiError(400, "invalid_cursor", message) from exc
        views = [job_view(j, storage=service.storage) for j in jobs]
        return {"jobs": views, "next_cursor": next_cursor}

    @router.post("/v1/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    async def cancel(
        job_id: str, caller: Annotated[Caller, Depends(needs(SUBMIT))]
    ) -> dict[str, Any]:
        await _get(service, job_id, caller)
        return await job_answer(service, await store.cancel(job_id))

    @router.get("/v1/outputs/{job_id}/{path:path}", summary="Download an output file")
    async def output(
        job_id: str, path: str, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> Response:
        parts = _output_parts(job_id, path)
        file = service.output_dir / job_id / Path(*parts)
        try:
            size = file.stat().st_size if file.is_file() else None
        except OSError:  # a name the file system cannot hold is not there either
            size = None
        if size is None or not await _may_read_outputs(service, job_id, caller):
            raise ApiError(404, "output_not_found", f"job '{job_id}' has no output '{path}'")
        media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if size <= _SMALL_FILE:
            # One read on the loop costs less than FileResponse's hop to a worker thread.
            return Response(file.read_bytes(), media_type=media)
        return FileResponse(file, media_type=media)


def _output_parts(job_id: str, path: str) -> tuple[str, ...]:
    """The parts of an output path, refused (400) unless they stay in the job's folder and each
    is a name a file system can hold (1-255 bytes, no NUL)."""
    parts = PurePosixPath(path).parts
    fits = all(0 < len(p.encode("utf-8", "surrogatepass")) <= 255 and "\0" not in p for p in parts)
    if not JOB_ID.fullmatch(job_id) or not parts or ".." in parts or path.startswith("/"):
        raise ApiError(400, "invalid_path", "output paths must stay inside the job's folder")
    if not fits:
        raise ApiError(
            400, "invalid_path", "each part of an output path must be 1-255 bytes, without NUL"
        )
    return parts


def _wait_seconds(wait: bool, prefer: str | None, limit: float) -> float | None:
    if prefer:
        match = re.search(r"wait=(\d+(?:\.\d+)?)", prefer)
        if match:
            return min(float(match.group(1)), limit)
    return limit if wait else None


async def _get(service: Service, job_id: str, caller: Caller) -> Job:
    try:
        return await visible_job(service.store, job_id, caller)
    except JobNotFound as exc:
        raise ApiError(404, "job_not_found", f"no job '{job_id}'") from exc


async def _may_read_outputs(service: Service, job_id: str, caller: Caller) -> bool:
    """Whether the caller may read the job's output files: its own job's, or any with admin
    (also files whose job is gone from the store)."""
    if caller.sees_all:
        return True
    try:
        await visible_job(service.store, job_id, caller)
    except JobNotFound:
        return False
    return True
