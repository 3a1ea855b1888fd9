"""The gateway's OpenAPI document, made to say what the routes really answer.

FastAPI documents each route's success answer and a 422 of its own validation-error model. Our
routes answer every error with one shape (`{"error": {"code", "message", "details"}}`, see
`_errors`), refuse more than FastAPI can see (a body read and checked by the route itself, a full
queue, a missing key), and some succeed with more than one status. `document_errors` rebuilds the
document once with those answers, from the tables below, so that a client generator or a
conformance checker (schemathesis) can trust it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string", "description": "what was wrong and where"},
                "details": {"description": "the field, node or limit concerned, or null"},
            },
        }
    },
}

_WHY = {
    400: "Malformed request (JSON, graph, cursor, path, header)",
    401: "No API key, or one that is not valid",
    404: "Not found",
    409: "Conflicts with the current state (an id or key used for another request)",
    413: "The body is larger than the server's limit",
    415: "The body's Content-Type is not one this route takes",
    422: "A well-formed request the server cannot follow (field names the problem)",
    429: "The queue is full: retry after `Retry-After` seconds",
    503: "Cannot be served right now (API keys cannot be checked, or no instance has "
    "registered the node definitions a UI-format workflow is converted with)",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_CHALLENGE = {
    "WWW-Authenticate": {"description": "the Bearer challenge", "schema": {"type": "string"}}
}
_HEADERS: dict[int, dict[str, Any]] = {429: _RETRY_AFTER, 401: _CHALLENGE}

_ANY_BODY = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}

_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/jobs"): (400, 409, 413, 422, 429, 503),
    ("post", "/v1/jobs:validate"): (400, 413, 422, 503),
    ("get", "/v1/jobs"): (400,),
    ("get", "/v1/jobs/{job_id}"): (404,),
    ("post", "/v1/jobs/{job_id}/cancel"): (404,),
    ("get", "/v1/jobs/{job_id}/events"): (400, 404),
    ("get", "/v1/outputs/{job_id}/{path}"): (400, 404),
    ("post", "/v1/assets"): (400, 413, 415, 422),
    ("get", "/v1/assets/{asset_id}"): (404,),
    ("get", "/v1/assets/{asset_id}/content"): (404,),
    ("delete", "/v1/assets/{asset_id}"): (404,),
    ("get", "/v1/webhooks/deliveries"): (400,),
    ("get", "/v1/webhooks/deliveries/{delivery_id}"): (404,),
    ("post", "/v1/webhooks/deliveries/{delivery_id}/redeliver"): (404, 409),
    ("get", "/v1/models"): (400,),
    ("post", "/v1/presets/{name}/install"): (404,),
    ("delete", "/v1/models/{folder_type}/{filename}"): (400, 404),
    ("get", "/v1/templates/{name}"): (404,),
    ("post", "/v1/templates/{name}/jobs"): (400, 404, 409, 413, 415, 422, 429),
}
"""The 4xx each route raises itself, besides the 422 of its parameters and the 401 of auth."""

_JOB_ENDED: dict[str, Any] = {
    "description": "The job ended (or was waited for), or an earlier one was replayed",
    "headers": {
        "Idempotent-Replayed": {
            "description": "`true` when an Idempotency-Key replayed an earlier job",
            "schema": {"type": "string"},
        }
    },
    "content": _JSON_OBJECT,
}
_SUCCESS: dict[tuple[str, str], dict[int, dict[str, Any]]] = {
    ("post", "/v1/templates/{name}/jobs"): {200: _JOB_ENDED},
    ("post", "/v1/jobs"): {200: _JOB_ENDED},
    ("post", "/v1/assets"): {
        200: {"description": "The same bytes were stored already", "content": _JSON_OBJECT},
    },
    ("get", "/v1/outputs/{job_id}/{path}"): {
        200: {"description": "The file, with the type its name implies", "content": _ANY_BODY},
    },
    ("get", "/v1/assets/{asset_id}/content"): {
        200: {"description": "The asset's bytes, with its sniffed type", "content": _ANY_BODY},
    },
    ("get", "/ready"): {
        503: {
            "description": "No instance serves, or the queue is at its limit",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["ready", "instances_serving", "queued"],
                        "properties": {
                            "ready": {"type": "boolean"},
                            "instances_serving": {"type": "integer"},
                            "queued": {"type": "integer"},
                        },
                    }
                }
            },
        },
    },
}
"""Answers a route gives besides the one FastAPI documents (or instead of its content type)."""

_JOB_BODY_PATCH: dict[str, Any] = {
    "additionalProperties": False,
    "properties": {
        "workflow": {"minProperties": 1},
        "id": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "convert": {"additionalProperties": False},
        "timeouts": {
            "additionalProperties": False,
            "properties": {
                "queued_s": {"exclusiveMinimum": 0},
                "running_s": {"exclusiveMinimum": 0},
            },
        },
    },
}
"""What the submit routes check in a body beyond the schema `_submit` documents."""


def document_errors(
    app: FastAPI, *, auth: bool = False, public_paths: Iterable[str] = ("/health",)
) -> None:
    """Make `app.openapi()` (and `/openapi.json`) document the error answers. `auth`: API keys
    are on, so every route but `public_paths` may answer 401 (and 503 when keys cannot be
    read)."""
    public = frozenset(public_paths)
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = plain()
            _patch(spec, auth=auth, public=public)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _patch(spec: dict[str, Any], *, auth: bool, public: frozenset[str]) -> None:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            statuses = set(_ERRORS.get((method, path), ()))
            if operation.get("parameters") or operation.get("requestBody"):
                statuses.add(422)
            if auth and path not in public:
                statuses |= {401, 503}
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in sorted(statuses):
                responses[str(status)] = _error_response(status)
            for status, answer in _SUCCESS.get((method, path), {}).items():
                responses[str(status)] = answer
            if path in ("/v1/jobs", "/v1/jobs:validate") and method == "post":
                _patch_body(operation)


def _error_response(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _WHY[status],
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if status in _HEADERS:
        answer["headers"] = _HEADERS[status]
    return answer


def _patch_body(operation: dict[str, Any]) -> None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is not None:
        content["schema"] = _merged(content["schema"], _JOB_BODY_PATCH)


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
