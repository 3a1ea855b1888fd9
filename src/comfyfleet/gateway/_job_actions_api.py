"""`POST /v1/jobs/{id}/retry` and `GET /v1/jobs/{id}/workflow`: a finished job run again as a new
job, and the graph a job ran, as a file.

A retry is a new job (a new id, attempts from zero) with the old one's graph, priority, attempts
and options, owned by the caller, and `retry_of` naming the old one in its options. It goes
through the same intake as any submission (the graph checked against today's instances, the
queue limit), so it can be refused where the old one was not; a job without a graph (a model
install) is queued again as it was. Only finished jobs are retried: a queued or running one is
still trying (409).

The graph is the one stored with the job: media inputs already stored as files (`LoadImage`
reads `comfyfleet-assets/<hash>.png`), the rest as submitted, which ComfyUI's editor and
`/v1/jobs` both take as it is.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from comfyfleet.auth import READ, SUBMIT
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._intake import enqueue_job, job_answer, submit_job
from comfyfleet.gateway._jobs_api import _get
from comfyfleet.gateway._service import Service
from comfyfleet.gateway._tenancy import Caller, needs
from comfyfleet.jobs import NewJob


def job_actions_router(service: Service) -> APIRouter:
    router = APIRouter(tags=["jobs"])

    @router.post(
        "/v1/jobs/{job_id}/retry",
        status_code=202,
        summary="Run a finished job again, as a new job",
    )
    async def retry(job_id: str, caller: Annotated[Caller, Depends(needs(SUBMIT))]) -> JSONResponse:
        """202 with the new job (as `POST /v1/jobs` answers); its options name the old one
        in `retry_of`."""
        old = await _get(service, job_id, caller)
        if not old.terminal:
            raise ApiError(
                409,
                "job_not_finished",
                f"job '{job_id}' is {old.status}: only a finished job can be retried",
                {"status": str(old.status)},
            )
        new = NewJob(
            id=uuid.uuid4().hex,
            workflow=old.workflow,
            priority=old.priority,
            max_attempts=old.max_attempts,
            options=old.options.but(retry_of=old.id),
            owner=caller.owner,
        )
        if old.workflow:
            job, _ = await submit_job(service, new, caller, chosen=False)
        else:  # a job with no graph (a model install) has nothing to check
            job, _ = await enqueue_job(service, new)
        return JSONResponse(await job_answer(service, job), status_code=202)

    @router.get(
        "/v1/jobs/{job_id}/workflow",
        summary="The API-format graph a job ran, as a JSON file",
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def workflow(job_id: str, caller: Annotated[Caller, Depends(needs(READ))]) -> Response:
        job = await _get(service, job_id, caller)
        body: dict[str, Any] = job.workflow
        return Response(
            json.dumps(body, indent=2, ensure_ascii=False).encode(),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{job.id}.json"'},
        )

    return router
