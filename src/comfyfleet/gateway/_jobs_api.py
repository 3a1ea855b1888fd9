"""The job routes of `/v1`: submit (sync or async), dry-run, read, list, cancel, outputs.

Routes read from and write to the job store only; the dispatcher (in the same process for
`comfyfleet serve`) does the running. A submission is checked before anything is stored: the
body's shape, the graph (every node known to the instances, every link pointing at a node),
and its media inputs, which are fetched and stored once, so a job never fails later for
something the client could have been told at once.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from comfyfleet.auth import READ, SUBMIT
from comfyfleet.gateway._assets_api import resolve_job_media
from comfyfleet.gateway._body import read_json_body
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._model_inputs import check_model_urls, job_models
from comfyfleet.gateway._service import Service, prompt_by_name
from comfyfleet.gateway._submit import (
    JOB_ID,
    JOB_REQUEST_SCHEMA,
    idempotent_id,
    json_limits,
    new_job,
)
from comfyfleet.gateway._tenancy import Caller, media_for, needs, visible_job
from comfyfleet.gateway._views import job_view
from comfyfleet.jobs import (
    TERMINAL,
    FreeText,
    GraphError,
    InvalidCursor,
    Job,
    JobConflict,
    JobNotFound,
    JobStatus,
    NewJob,
    QueueFull,
    check_workflow,
    unsafe_paths,
)

_SMALL_FILE = 512 * 1024
"""Outputs up to this size are answered from one read; larger ones are streamed."""
_LARGE_GRAPH = 2000
"""Graphs with more nodes than this are read and checked in a worker thread, off the loop."""


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
        new = replace(await _parse(service, body, derived), owner=caller.owner)
        # Only an id the client chose can name a stored job; a fresh one skips the lookup.
        chosen = derived is not None or body.get("id") is not None
        replay = await _existing(service, new) if chosen else None
        if replay is not None:
            job, created = replay, False
        else:
            new = await _checked(service, new, caller)
            job, created = await _enqueue(service, new)
        seconds = _wait_seconds(wait, prefer, settings.max_wait_s)
        if seconds is not None:
            job = await _wait_for_end(service, job.id, seconds)
        status = 200 if job.status in TERMINAL or seconds is not None else 202
        headers = {} if created or idempotency_key is None else {"Idempotent-Replayed": "true"}
        content = await _view(service, job, inline)
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
        new = await _parse(service, body, None)
        await _check_graph(service, new.workflow)
        return {"valid": True, "nodes": len(new.workflow), "options": new.options}


def _read_routes(router: APIRouter, service: Service) -> None:
    store = service.store

    @router.get("/v1/jobs/{job_id}", summary="A job's status, progress, outputs and error")
    async def read_job(
        job_id: str, caller: Annotated[Caller, Depends(needs(READ))], inline: bool = False
    ) -> dict[str, Any]:
        return await _view(service, await _get(service, job_id, caller), inline)

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
        return await _view(service, await store.cancel(job_id))

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


# --- steps of a submission --------------------------------------------------------------------


async def _parse(service: Service, body: dict[str, Any], job_id: str | None) -> NewJob:
    def parse() -> NewJob:
        return new_job(
            body,
            default_attempts=service.settings.max_attempts,
            default_events=service.webhook_events,
            storage_names=service.storage_names,
            job_id=job_id,
            max_nodes=service.settings.max_graph_nodes,
        )

    return await asyncio.to_thread(parse) if _is_large(body.get("workflow")) else parse()


def _is_large(workflow: Any) -> bool:
    return isinstance(workflow, dict) and len(workflow) > _LARGE_GRAPH


async def _existing(service: Service, new: NewJob) -> Job | None:
    """The stored job a repeated request stands for (no refetching its media), if any."""
    try:
        job = await service.store.get(new.id)
    except JobNotFound:
        return None
    if job.owner != new.owner or job.request_hash != new.request_hash:
        # Another key's job reads as any conflict: nothing about it (age, body) is told.
        raise ApiError(409, "job_conflict", JobConflict(new.id).message)
    if time.time() - job.created_at > service.settings.idempotency_ttl_s:
        raise ApiError(
            409,
            "idempotency_key_expired",
            f"job '{new.id}' was submitted more than "
            f"{service.settings.idempotency_ttl_s:g}s ago; use a new key or id",
        )
    return job


async def _check_graph(service: Service, workflow: Any) -> None:
    check = asyncio.to_thread if _is_large(workflow) else _call
    try:
        known = None
        if service.node_types is not None and isinstance(workflow, dict):
            wanted = {str(n.get("class_type")) for n in workflow.values() if isinstance(n, dict)}
            known = await service.node_types.known(wanted)
        await check(check_workflow, workflow, known_classes=known)
    except GraphError as exc:
        raise ApiError(
            exc.status, "invalid_workflow", exc.message, {**exc.details(), "hint": exc.hint}
        ) from exc
    free_text = service.node_types.free_text if service.node_types else prompt_by_name
    await check(_refuse_unsafe_paths, workflow, free_text)


def _refuse_unsafe_paths(workflow: dict[str, Any], free_text: FreeText) -> None:
    for node_id, class_type, name, reason in unsafe_paths(workflow, free_text)[:1]:
        raise ApiError(
            422,
            "unsafe_path",
            f"node {node_id} ({class_type}): input '{name}' is refused: {reason}",
            {"node_id": node_id, "input": name},
        )


async def _call(function: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    function(*args, **kwargs)


async def _checked(service: Service, new: NewJob, caller: Caller) -> NewJob:
    """The job with its graph checked and its media inputs stored and rewritten."""
    await _check_graph(service, new.workflow)
    await check_model_urls(new.workflow, service.net_policy)
    # What routing needs, fixed now: the models (affinity) and the key's running limit.
    limit = caller.max_running(service.settings.max_running_per_key)
    new = replace(new, models=job_models(new.workflow, service.loaders), max_running=limit)
    if service.media is None:
        return new
    workflow, rewrites = await resolve_job_media(new.workflow, media_for(service.media, caller))
    if not rewrites:
        return new
    return replace(new, workflow=dict(workflow))


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
    if not created:
        return job, created
    if _is_large(new.workflow):
        # Left to the dispatcher's next round (within its poll interval), not woken now: taking
        # a graph of many thousand nodes (decoding, rewriting, encoding it for ComfyUI) holds the
        # interpreter for a while, and done at once it would delay this very answer.
        return job, created
    if service.dispatch is not None:
        await service.dispatch()
    else:
        service.notify()
    return job, created


def _wait_seconds(wait: bool, prefer: str | None, limit: float) -> float | None:
    if prefer:
        match = re.search(r"wait=(\d+(?:\.\d+)?)", prefer)
        if match:
            return min(float(match.group(1)), limit)
    return limit if wait else None


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


async def _view(service: Service, job: Job, inline: bool = False) -> dict[str, Any]:
    store = service.store
    position = await store.queue_position(job.id) if job.status == JobStatus.QUEUED else None
    return job_view(
        job,
        queue_position=position,
        output_dir=service.output_dir,
        inline=inline,
        storage=service.storage,
    )
