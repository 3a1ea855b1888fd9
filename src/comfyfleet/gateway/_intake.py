"""The steps of taking a job, shared by every front door (`/v1`, the ComfyUI API, Comfy API v2):
read the request into a `NewJob`, recognise a repeat of a stored one, check the graph and store
its media, enqueue it, wait for its end, and show it.

A front door translates its own dialect into these steps and their `ApiError`s back into its own
error shape; it never re-implements a check, so every door refuses the same things.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from comfyfleet.gateway._assets_api import resolve_job_media
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._model_inputs import check_model_urls, job_models
from comfyfleet.gateway._service import Service, prompt_by_name
from comfyfleet.gateway._submit import check_size, new_job
from comfyfleet.gateway._tenancy import Caller, media_for
from comfyfleet.gateway._views import job_view
from comfyfleet.jobs import (
    FreeText,
    GraphError,
    Job,
    JobConflict,
    JobNotFound,
    JobStatus,
    NewJob,
    QueueFull,
    check_workflow,
    unsafe_paths,
)
from comfyfleet.workflows import ConversionError, TooManyNodes, convert_workflow, ui_node_count

LARGE_GRAPH = 2000
"""Graphs with more nodes than this are read and checked in a worker thread, off the loop."""


async def submit_job(
    service: Service, new: NewJob, caller: Caller, *, chosen: bool
) -> tuple[Job, bool]:
    """The stored job for `new`: the existing one when `chosen` (the client picked the id) and
    it is a repeat, else `new` checked, its media stored, and enqueued. (job, created)."""
    replay = await existing_job(service, new) if chosen else None
    if replay is not None:
        return replay, False
    return await enqueue_job(service, await prepare_job(service, new, caller))


async def parse_job(service: Service, body: dict[str, Any], job_id: str | None) -> NewJob:
    def parse() -> NewJob:
        return new_job(
            body,
            default_attempts=service.settings.max_attempts,
            default_events=service.webhook_events,
            storage_names=service.storage_names,
            job_id=job_id,
            max_nodes=service.settings.max_graph_nodes,
        )

    new = await asyncio.to_thread(parse) if is_large(body.get("workflow")) else parse()
    if ui_node_count(new.workflow) is None:
        return new
    return replace(new, workflow=await api_format(service, new.workflow))


def is_large(workflow: Any) -> bool:
    count = ui_node_count(workflow)
    if count is not None:
        return count > LARGE_GRAPH
    return isinstance(workflow, dict) and len(workflow) > LARGE_GRAPH


async def api_format(service: Service, workflow: dict[str, Any]) -> dict[str, Any]:
    """A workflow saved from the editor (UI format), as the API-format graph the editor would
    queue, converted with the node definitions the serving instances registered. Every front
    door takes UI-format workflows through this one step, before the usual checks."""
    limit = service.settings.max_graph_nodes
    count = ui_node_count(workflow) or 0
    check_size(count, limit)
    if service.node_types is None:
        raise ApiError(
            422,
            "invalid_workflow",
            "this server reads no node definitions, so it cannot convert a UI-format workflow",
            {"hint": "submit the API format ('Export (API)' in ComfyUI)"},
        )
    info = await service.node_types.object_info()
    if not info:
        raise ApiError(
            503,
            "node_definitions_unavailable",
            "no instance has registered its node definitions yet, and a UI-format workflow "
            "is converted with them; retry shortly",
            headers={"Retry-After": str(service.settings.retry_after_s)},
        )
    convert = functools.partial(convert_workflow, workflow, info, max_nodes=limit)
    try:
        return await asyncio.to_thread(convert) if count > LARGE_GRAPH else convert()
    except TooManyNodes as exc:
        check_size(exc.count, limit)
        raise
    except ConversionError as exc:
        details = {
            "node_id": exc.node_id,
            "class_type": exc.class_type,
            "reason": exc.reason,
            "hint": exc.hint,
        }
        raise ApiError(422, "invalid_workflow", exc.message, details) from exc


async def existing_job(service: Service, new: NewJob) -> Job | None:
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


async def check_graph(service: Service, workflow: Any) -> None:
    check = asyncio.to_thread if is_large(workflow) else _call
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


async def prepare_job(service: Service, new: NewJob, caller: Caller) -> NewJob:
    """The job with its graph checked and its media inputs stored and rewritten."""
    await check_graph(service, new.workflow)
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


async def enqueue_job(service: Service, new: NewJob) -> tuple[Job, bool]:
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
    if is_large(new.workflow):
        # Left to the dispatcher's next round (within its poll interval), not woken now: taking
        # a graph of many thousand nodes (decoding, rewriting, encoding it for ComfyUI) holds the
        # interpreter for a while, and done at once it would delay this very answer.
        return job, created
    if service.dispatch is not None:
        await service.dispatch()
    else:
        service.notify()
    return job, created


async def wait_for_end(service: Service, job_id: str, seconds: float) -> Job:
    return await service.store.wait_end(job_id, timeout=seconds)


async def job_answer(service: Service, job: Job, inline: bool = False) -> dict[str, Any]:
    store = service.store
    position = await store.queue_position(job.id) if job.status == JobStatus.QUEUED else None
    return job_view(
        job,
        queue_position=position,
        output_dir=service.output_dir,
        inline=inline,
        storage=service.storage,
    )
