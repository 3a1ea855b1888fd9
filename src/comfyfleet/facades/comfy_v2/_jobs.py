"""The job routes of Comfy API v2: submit, read, list, cancel, the graph a job ran, and health.

A v2 job is an ordinary fleet job: it goes through the gateway's intake (`parse_job`,
`submit_job`: the same body limits, graph checks, media resolution, queue bound and dispatch as
`/v1/jobs`), is listed by `/v1/jobs`, retried, and sends the configured webhooks.

Idempotency follows the contract, which is stricter than `/v1`: an `Idempotency-Key` is
single-use and never replayed. The key is turned into the job's id the way `/v1` does it (an HMAC
under the server's secret, per API key), so a second submit with a key whose job exists is
`422 idempotency_key_reuse`, whatever its body, and the client polls the job it already has.
A submit the gateway refused (a bad graph, a full queue) stored nothing and leaves the key free.

Listing pages with the store's own cursor (`next_cursor`, null on the last page). `status` takes
the contract's names, comma-separated; `metadata[<key>]=<value>` keeps the jobs with that label.
Filters the store cannot apply (several statuses, `canceling`, labels) are applied to each page,
so a page can hold fewer than `limit` jobs while `next_cursor` still leads on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from comfyfleet.auth import READ, SUBMIT
from comfyfleet.facades.comfy_v2._context import V2, base_url
from comfyfleet.facades.comfy_v2._errors import invalid, translated
from comfyfleet.facades.comfy_v2._intake import fleet_body
from comfyfleet.facades.comfy_v2._views import v2_status
from comfyfleet.gateway import (
    ApiError,
    Caller,
    idempotent_id,
    json_limits,
    needs,
    parse_job,
    read_json_body,
    submit_job,
)
from comfyfleet.jobs import InvalidCursor, Job, JobStatus

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
STATUSES = ("queued", "running", "succeeded", "canceling", "canceled", "failed", "expired")
_SPENT = ("job_conflict", "idempotency_key_expired")
"""What the gateway says of a key whose job exists with another body or is old: spent too."""
_STORE_STATUS = {
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "canceling": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.CANCELLED,
}


def reused(key: str) -> ApiError:
    return ApiError(
        422,
        "idempotency_key_reuse",
        "this Idempotency-Key has already been used; keys are single-use: poll or list your "
        "jobs instead of submitting again with the same key",
        {"idempotency_key": key[:255]},
    )


def jobs_routes(router: APIRouter, v2: V2) -> None:
    service = v2.service
    store = service.store

    @router.post("/api/v2/jobs", status_code=201, summary="Submit a workflow (Comfy API v2)")
    @translated
    async def submit(
        request: Request,
        caller: Annotated[Caller, Depends(needs(SUBMIT))],
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        body = await read_json_body(request, json_limits(service.settings))
        fleet, labels = fleet_body(body, v2.hashes)
        derived = None
        if idempotency_key is not None:
            derived = idempotent_id(idempotency_key, caller.owner, service.idempotency_secret)
        new = replace(await parse_job(service, fleet, derived), owner=caller.owner)
        if labels:
            new = replace(new, options=new.options.but(metadata=labels))
        try:
            job, created = await submit_job(service, new, caller, chosen=derived is not None)
        except ApiError as exc:
            if idempotency_key is not None and exc.code in (
                "job_conflict",
                "idempotency_key_expired",
            ):
                raise reused(idempotency_key) from exc
            raise
        if not created:
            assert idempotency_key is not None  # only a chosen id names a stored job
            raise reused(idempotency_key)
        return JSONResponse(await v2.view(job, base_url(request)), status_code=201)

    @router.get("/api/v2/jobs/{job_id}", summary="A job's state, progress and outputs")
    @translated
    async def read(
        job_id: str, request: Request, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> dict[str, Any]:
        return await v2.view(await v2.job(job_id, caller), base_url(request))

    @router.get("/api/v2/jobs", summary="List jobs, newest first")
    @translated
    async def list_jobs(
        request: Request, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> dict[str, Any]:
        query = request.query_params
        limit = _limit(query.get("limit"))
        wanted = _statuses(query.get("status"))
        labels = {
            key[len("metadata[") : -1]: value
            for key, value in query.multi_items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        stored = {_STORE_STATUS[s] for s in wanted if s in _STORE_STATUS} if wanted else None
        if stored is not None and not stored:
            return {"jobs": [], "next_cursor": None}  # `expired` alone: never reported
        one = next(iter(stored)) if stored is not None and len(stored) == 1 else None
        try:
            jobs, next_cursor = await store.list_jobs(
                status=one, limit=limit, cursor=query.get("cursor"), owner=caller.list_filter
            )
        except InvalidCursor as exc:
            raise ApiError(
                400, "invalid_cursor", "cursor must come from a previous answer"
            ) from exc
        base = base_url(request)
        kept = [j for j in jobs if _matches(j, wanted, labels)]
        return {
            "jobs": [await v2.view(j, base, full=False) for j in kept],
            "next_cursor": next_cursor,
        }

    @router.post("/api/v2/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    @translated
    async def cancel(
        job_id: str, request: Request, caller: Annotated[Caller, Depends(needs(SUBMIT))]
    ) -> dict[str, Any]:
        """Idempotent: a finished job stays as it ended; a running one reads `canceling` until
        its instance has stopped it."""
        await v2.job(job_id, caller)
        return await v2.view(await store.cancel(job_id), base_url(request))

    _graph_and_health_routes(router, v2)


def _graph_and_health_routes(router: APIRouter, v2: V2) -> None:
    @router.get("/api/v2/jobs/{job_id}/workflow", summary="The API-format graph a job ran")
    @translated
    async def workflow(
        job_id: str, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> dict[str, Any]:
        """The graph as the fleet ran it (media references already resolved to input files).
        `format` tells an authoring (UI) graph from an executed one; the fleet keeps only the
        executed graph, so it is always `api`."""
        job = await v2.job(job_id, caller)
        return {"workflow": job.workflow, "format": "api"}

    @router.get("/api/v2/health", summary="The gateway process answers (no key needed)")
    async def health() -> dict[str, str]:
        """Reachability of this process only, as the contract defines it: whether instances
        serve is `/ready`'s question."""
        return {"status": "healthy"}


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise invalid(f"'limit' must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return int(text)


def _statuses(text: str | None) -> set[str] | None:
    if not text:
        return None
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(STATUSES))
    if unknown:
        shown = ", ".join(u[:32] for u in unknown[:5])
        raise invalid(f"unknown status filter value(s): {shown}", allowed=list(STATUSES))
    return wanted


def _matches(job: Job, wanted: set[str] | None, labels: dict[str, str]) -> bool:
    if wanted is not None and v2_status(job) not in wanted:
        return False
    if not labels:
        return True
    mine = job.options.metadata
    return mine is not None and all(mine.get(k) == v for k, v in labels.items())
