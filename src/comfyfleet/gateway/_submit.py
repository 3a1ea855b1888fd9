"""Reading a job request: the body's shape, the job's options, and its idempotency.

Everything a client can get wrong is an `ApiError` naming the field. The request hash covers
everything that shapes the job (graph, priority, attempts, options), so a repeat of the same
request is recognised as such and the same id with anything different is a conflict.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Collection, Iterable
from typing import Any

from fastapi import Request

from comfyfleet.gateway._errors import ApiError
from comfyfleet.jobs import NewJob
from comfyfleet.webhooks import WebhookConfigError, parse_webhook

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FIELDS = frozenset(
    {"workflow", "id", "priority", "max_attempts", "webhook", "storage", "convert", "timeouts"}
)
_IMAGE_FORMATS = ("webp", "jpeg")

_NODE = {
    "type": "object",
    "required": ["class_type", "inputs"],
    "properties": {"class_type": {"type": "string"}, "inputs": {"type": "object"}},
}
JOB_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["workflow"],
    "properties": {
        "workflow": {
            "type": "object",
            "description": "ComfyUI API-format graph: node id -> {class_type, inputs}",
            "additionalProperties": _NODE,
        },
        "id": {"type": "string", "description": "client-chosen job id (retries are harmless)"},
        "priority": {"type": "integer", "default": 0},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10},
        "webhook": {
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string"},
                "events": {"type": "array", "items": {"type": "string"}},
            },
        },
        "storage": {"type": "string", "description": "a configured storage target"},
        "convert": {
            "type": "object",
            "required": ["format"],
            "properties": {
                "format": {"enum": list(_IMAGE_FORMATS)},
                "quality": {"type": "integer", "minimum": 1, "maximum": 100},
            },
        },
        "timeouts": {
            "type": "object",
            "properties": {"queued_s": {"type": "number"}, "running_s": {"type": "number"}},
        },
    },
}
"""The body of `POST /v1/jobs`, for the OpenAPI docs (the route reads and checks it itself, so
that a bad body gets an answer naming the field rather than a generic validation error)."""


async def read_json_body(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:  # a chunked body says no length up front
            raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    return body


def idempotent_id(key: str, owner: str | None, secret: bytes) -> str:
    """The job id an `Idempotency-Key` stands for: an HMAC of the owner (API key id, None when
    keys are off) and the key under the server's `secret`, so each API key has keys of its own
    and nobody without the secret can compute another key's job id to take it first."""
    if not key or len(key) > 255 or not key.isprintable():
        raise ApiError(
            400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable characters"
        )
    message = f"{owner or ''}\0{key}".encode()
    return "idem-" + hmac.new(secret, message, hashlib.sha256).hexdigest()[:40]


def new_job(
    body: dict[str, Any],
    *,
    default_attempts: int,
    default_events: Iterable[str],
    storage_names: Collection[str],
    job_id: str | None = None,
) -> NewJob:
    """The job a request body asks for; `job_id` (from an Idempotency-Key) when it names none."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown fields: {', '.join(unknown)}",
            {"allowed": sorted(_FIELDS)},
        )
    if "workflow" not in body:
        raise ApiError(422, "invalid_request", "'workflow' is required (an API-format graph)")
    chosen = body.get("id") or job_id or uuid.uuid4().hex
    if not isinstance(chosen, str) or not JOB_ID.match(chosen):
        raise ApiError(
            422, "invalid_request", "'id' must be 1-128 letters, digits, '.', '_' or '-'"
        )
    priority = body.get("priority", 0)
    attempts = body.get("max_attempts", default_attempts)
    if not _is_int(priority) or not _is_int(attempts) or not 1 <= attempts <= 10:
        raise ApiError(
            422,
            "invalid_request",
            "'priority' must be an integer and 'max_attempts' an integer from 1 to 10",
        )
    options = _options(body, default_events, storage_names)
    canonical = json.dumps(
        {"workflow": body["workflow"], "priority": priority, "max_attempts": attempts}
        | {"options": options},
        sort_keys=True,
        separators=(",", ":"),
    )
    return NewJob(
        id=chosen,
        workflow=body["workflow"],
        priority=priority,
        max_attempts=attempts,
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        options=options,
    )


def _options(
    body: dict[str, Any], default_events: Iterable[str], storage_names: Collection[str]
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if body.get("webhook") is not None:
        try:
            target = parse_webhook(body["webhook"], default_events=default_events)
        except WebhookConfigError as exc:
            raise ApiError(422, "invalid_webhook", str(exc)) from exc
        options["webhook"] = {"url": target.url, "events": sorted(target.events)}
    if body.get("storage") is not None:
        name = body["storage"]
        if not isinstance(name, str) or name not in storage_names:
            raise ApiError(
                422,
                "invalid_storage",
                f"'storage' must name a configured storage target, not {name!r}",
                {"targets": sorted(storage_names)},
            )
        options["storage"] = name
    if body.get("convert") is not None:
        options["convert"] = _convert(body["convert"])
    if body.get("timeouts") is not None:
        options["timeouts"] = _timeouts(body["timeouts"])
    return options


def _convert(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("format") not in _IMAGE_FORMATS:
        raise ApiError(
            422,
            "invalid_convert",
            '\'convert\' must be {"format": "webp" | "jpeg", "quality": 1-100}',
        )
    quality = value.get("quality", 85)
    if not _is_int(quality) or not 1 <= quality <= 100 or set(value) - {"format", "quality"}:
        raise ApiError(422, "invalid_convert", "'convert.quality' must be an integer from 1 to 100")
    return {"format": value["format"], "quality": quality}


def _timeouts(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or set(value) - {"queued_s", "running_s"}:
        raise ApiError(
            422, "invalid_timeouts", "'timeouts' takes 'queued_s' and 'running_s' (seconds)"
        )
    out: dict[str, float] = {}
    for name, seconds in value.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ApiError(422, "invalid_timeouts", f"'timeouts.{name}' must be a positive number")
        out[name] = float(seconds)
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
