"""`POST /prompt`: a ComfyUI prompt becomes a fleet job.

The prompt id is the job id. A client that chooses its own (`prompt_id`, as the editor and most
libraries do, a UUID) gets that id; otherwise one is made (a UUID, as ComfyUI makes them). Ids
stay unique because the store has one job per id: the same `prompt_id` sent again with the same
graph is the same job, answered again without running twice (a client retrying a timed-out
POST); with another graph, or by another API key, it is refused (400, `prompt_id_conflict`).

`number` and `front` order ComfyUI's single queue. The fleet orders by priority, then age:
`front: true` submits at priority 1, ahead of everything waiting at the default 0; `number` is
kept and reported back (queue items, history) but orders nothing.

Errors have ComfyUI's shape, `{"error": {type, message, details, extra_info}, "node_errors"}`:
what ComfyUI's validation would say (see `_validate`), and what the fleet's own checks refuse
(unsafe paths, media that cannot be fetched, a full queue: 429) in the same shape, the node
named in `node_errors` where there is one.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from fastapi.responses import JSONResponse

from comfyfleet.facades.comfyui._shapes import number_of
from comfyfleet.facades.comfyui._validate import PromptInvalid, validate_prompt
from comfyfleet.gateway import (
    JOB_ID,
    ApiError,
    Caller,
    Service,
    encodable,
    parse_job,
    submit_job,
)
from comfyfleet.jobs import Job

FRONT_PRIORITY = 1
_KEEP_STATUS = frozenset({401, 403, 413, 429, 503})
"""Statuses passed on as they are; every other refusal is ComfyUI's 400."""


def comfy_error(exc: ApiError) -> JSONResponse:
    """An `ApiError` of the fleet's checks in ComfyUI's error shape."""
    details = exc.details if isinstance(exc.details, dict) else {}
    node_errors: dict[str, Any] = {}
    node_id = details.get("node_id")
    if node_id is not None:
        error = {
            "type": exc.code,
            "message": exc.message,
            "details": str(details.get("input") or ""),
            "extra_info": details,
        }
        node_errors[str(node_id)] = {
            "errors": [error],
            "dependent_outputs": [],
            "class_type": details.get("class_type") or details.get("node_type"),
        }
    body = {
        "error": {
            "type": exc.code,
            "message": exc.message,
            "details": str(details.get("hint") or ""),
            "extra_info": details,
        },
        "node_errors": node_errors,
    }
    status = exc.status if exc.status in _KEEP_STATUS else 400
    return JSONResponse(encodable(body), status_code=status, headers=exc.headers)


def invalid(kind: str, message: str, details: str = "") -> JSONResponse:
    body = {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }
    return JSONResponse(body, status_code=400)


async def take_prompt(
    service: Service,
    body: Any,
    caller: Caller,
    *,
    info: dict[str, Any] | None,
    file_inputs: frozenset[tuple[str, str]],
) -> Job | JSONResponse:
    """The job `body` asks for (stored, or the one it repeats), or ComfyUI's refusal."""
    if not isinstance(body, dict) or "prompt" not in body:
        return invalid("no_prompt", "No prompt provided")
    prompt = body["prompt"]
    chosen = body.get("prompt_id")
    if chosen is not None and (not isinstance(chosen, str) or not JOB_ID.fullmatch(chosen)):
        return invalid(
            "invalid_prompt_id",
            "prompt_id must be 1-128 letters, digits, '.', '_' or '-' (a UUID, say)",
        )
    extra = body.get("extra_data")
    extra = dict(extra) if isinstance(extra, dict) else {}
    client_id = body.get("client_id", extra.pop("client_id", None))
    number = body.get("number")
    if isinstance(number, bool) or not isinstance(number, int | float):
        number = None
    if info:
        try:
            validate_prompt(prompt, info, file_inputs)
        except PromptInvalid as exc:
            return JSONResponse(exc.body(), status_code=400)
    request = {"workflow": prompt, "id": chosen or str(uuid.uuid4())}
    if body.get("front") is True:
        request["priority"] = FRONT_PRIORITY
    try:
        new = await parse_job(service, request, None)
        comfy = {"client_id": client_id if isinstance(client_id, str) else None, "number": number}
        options = new.options.but(comfyui=comfy, extra_data=extra or None)
        new = replace(new, options=options, owner=caller.owner)
        job, _created = await submit_job(service, new, caller, chosen=chosen is not None)
    except ApiError as exc:
        if exc.code == "job_conflict":
            message = f"prompt_id '{chosen}' is already taken by another prompt"
            return invalid("prompt_id_conflict", message, "send a new prompt_id")
        return comfy_error(exc)
    return job


def prompt_answer(job: Job) -> dict[str, Any]:
    return {"prompt_id": job.id, "number": number_of(job), "node_errors": {}}
