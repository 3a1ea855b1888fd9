"""`/v1/templates`: the templates, their parameters as JSON Schema, whether the fleet has their
model files, and running one as a job.

`POST /v1/templates/{name}/jobs` turns `params` into the template's graph and hands the rest of
the body to the same intake as `POST /v1/jobs` (every check, media, idempotency, `?wait`), so a
template job is an ordinary job; its options say which template made it and with which values
(the random seed it drew included; image values left out, they may be large).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from comfyfleet.auth import READ, SUBMIT
from comfyfleet.gateway._body import read_json_body
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._intake import job_answer, parse_job, submit_job, wait_for_end
from comfyfleet.gateway._jobs_api import _wait_seconds
from comfyfleet.gateway._openapi import _JOB_BODY_PATCH, _merged
from comfyfleet.gateway._service import Service
from comfyfleet.gateway._submit import _FIELDS, JOB_REQUEST_SCHEMA, idempotent_id, json_limits
from comfyfleet.gateway._tenancy import Caller, needs
from comfyfleet.jobs import TERMINAL
from comfyfleet.templates import (
    ParameterError,
    ParamType,
    Template,
    TemplateLibrary,
    TemplateNotFound,
)

_ALLOWED = sorted((_FIELDS - {"workflow"}) | {"params"})


def _job_body_schema() -> dict[str, Any]:
    """The body of `POST /v1/jobs` without `workflow`, with `params` instead."""
    schema = copy.deepcopy(JOB_REQUEST_SCHEMA)
    patch = copy.deepcopy(_JOB_BODY_PATCH)
    del schema["properties"]["workflow"], patch["properties"]["workflow"]
    schema["required"] = []
    schema["properties"]["params"] = {
        "type": "object",
        "description": "the template's parameters (GET /v1/templates/{name} has their schema)",
    }
    return _merged(schema, patch)


def templates_router(service: Service, library: TemplateLibrary) -> APIRouter:
    router = APIRouter(tags=["templates"])

    @router.get(
        "/v1/templates",
        summary="Templates, their parameters, and whether their models are on disk",
        dependencies=[Depends(needs(READ))],
    )
    async def list_templates() -> dict[str, Any]:
        """Every template with its parameters as JSON Schema; `broken` lists the files that
        did not load, with the key at fault."""
        await asyncio.to_thread(library.refresh)
        on_disk = await _fleet_models(service)
        return {
            "templates": [_entry(t, on_disk) for t in library.all()],
            "broken": [b.to_dict() for b in library.broken()],
        }

    @router.get(
        "/v1/templates/{name}",
        summary="One template: parameters, models, and which of them are missing",
        dependencies=[Depends(needs(READ))],
    )
    async def read_template(name: str) -> dict[str, Any]:
        await asyncio.to_thread(library.refresh)
        template = _template(library, name)
        on_disk = await _fleet_models(service)
        missing = [key for key in template.model_keys() if key not in on_disk]
        return _entry(template, on_disk) | {"missing_models": missing}

    body_doc = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _job_body_schema()}},
        }
    }

    @router.post(
        "/v1/templates/{name}/jobs",
        status_code=202,
        summary="Run a template as a job",
        openapi_extra=body_doc,
    )
    async def submit(
        name: str,
        request: Request,
        caller: Annotated[Caller, Depends(needs(SUBMIT))],
        wait: bool = False,
        inline: bool = False,
        prefer: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """`{"params": {...}}` plus any field of a `/v1/jobs` body but `workflow`; answers as
        `POST /v1/jobs` does (202, or 200 with `?wait=true` / `Prefer: wait=N`). A value a
        parameter does not take is a 422 `invalid_parameter` naming it and the bound."""
        body = await read_json_body(request, json_limits(service.settings))
        await asyncio.to_thread(library.refresh)
        template = _template(library, name)
        values, job_body = _filled(template, body)
        derived = None
        if idempotency_key is not None:
            derived = idempotent_id(idempotency_key, caller.owner, service.idempotency_secret)
        new = await parse_job(service, job_body, derived)
        chosen = derived is not None or body.get("id") is not None
        record = {"name": template.name, "params": _recorded(template, values)}
        new = replace(
            new,
            owner=caller.owner,
            options=new.options.but(template=record),
            # A repeat is the same template request, whatever seed it would draw this time.
            request_hash=_request_hash(template.name, body) if chosen else "",
        )
        job, created = await submit_job(service, new, caller, chosen=chosen)
        seconds = _wait_seconds(wait, prefer, service.settings.max_wait_s)
        if seconds is not None:
            job = await wait_for_end(service, job.id, seconds)
        status = 200 if job.status in TERMINAL or seconds is not None else 202
        headers = {} if created or idempotency_key is None else {"Idempotent-Replayed": "true"}
        return JSONResponse(
            await job_answer(service, job, inline), status_code=status, headers=headers
        )

    return router


def _template(library: TemplateLibrary, name: str) -> Template:
    try:
        return library.get(name)
    except TemplateNotFound as exc:
        raise ApiError(404, "template_not_found", exc.message, {"known": exc.known}) from exc


def _filled(template: Template, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The resolved values and the `/v1/jobs` body that runs them."""
    unknown = sorted(set(body) - set(_ALLOWED))
    if unknown:
        message = f"unknown fields: {', '.join(unknown)}"
        if "workflow" in unknown:
            message += " (a template job takes 'params'; the template has the workflow)"
        raise ApiError(422, "invalid_request", message, {"allowed": _ALLOWED})
    try:
        values = template.resolve(body.get("params") or {})
    except ParameterError as exc:
        raise ApiError(422, "invalid_parameter", exc.message, exc.details()) from exc
    job_body = {key: value for key, value in body.items() if key != "params"}
    return values, job_body | {"workflow": template.apply(values)}


def _recorded(template: Template, values: dict[str, Any]) -> dict[str, Any]:
    images = {n for n, p in template.parameters.items() if p.type is ParamType.IMAGE}
    return {name: value for name, value in values.items() if name not in images}


def _request_hash(name: str, body: dict[str, Any]) -> str:
    canonical = json.dumps({"template": name, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _fleet_models(service: Service) -> frozenset[str]:
    """The model files on the disks of the agents alive, as `folder_type/name`."""
    fleet = await service.fleet()
    return frozenset(
        f"{kind}/{name}"
        for instance in fleet.instances
        if instance.agent in fleet.alive
        for kind, names in instance.models.items()
        for name in names
    )


def _entry(template: Template, on_disk: frozenset[str]) -> dict[str, Any]:
    return {
        "name": template.name,
        "description": template.description,
        "parameters": template.schema(),
        "models": {kind: list(names) for kind, names in template.models.items()},
        "preset": template.preset,
        "models_present": all(key in on_disk for key in template.model_keys()),
        "openai": template.openai is not None,
    }
