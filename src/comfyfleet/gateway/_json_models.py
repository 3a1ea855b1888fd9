"""JSON bodies read into pydantic models, with the gateway's own body rules.

FastAPI can bind a body to a model by itself, but it would take bodies of any Content-Type and
skip the limits `read_json_body` holds every body to (size, depth, a 415 for what does not say
it is JSON, so a cross-site form cannot post it). Routes here read the body that way, then
validate it with the model; the model still documents the body in OpenAPI (`body_doc`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from comfyfleet.gateway._body import JsonLimits, read_json_body
from comfyfleet.gateway._errors import ApiError

Model = TypeVar("Model", bound=BaseModel)
SMALL = JsonLimits(max_bytes=64 * 1024, max_depth=8, max_items=1000, max_string_bytes=16 * 1024)
"""Enough for any small command body (a key request, a model to install)."""


async def read_model(request: Request, model: type[Model], limits: JsonLimits = SMALL) -> Model:
    """The body as `model`, or a 4xx in the one error shape naming the first bad field."""
    body = await read_json_body(request, limits)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise ApiError(
            422,
            "invalid_request",
            f"{where}: {first.get('msg', 'invalid')}",
            [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors],
        ) from exc


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that documents `model` as the route's required JSON body."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }
