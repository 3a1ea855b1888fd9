"""Reading a job request: the body's shape, the job's options, and its idempotency.

Everything a client can get wrong is an `ApiError` naming the field, raised before anything is
stored. The request hash covers everything that shapes the job (graph, priority, attempts,
options), so a repeat of the same request is recognised as such and the same id with anything
different is a conflict. It is only computed for an id the client chose (an `id` or an
`Idempotency-Key`): a generated id is never sent again, and sorting a large graph to hash it is
the costliest step of a submission.

Bounds a client cannot pass: `priority` is a 32-bit signed integer (it is stored as one and
compared in SQL), timeouts are finite and at most `MAX_TIMEOUT_S`, and the workflow has at most
`serve.max_graph_nodes` nodes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Collection, Iterable
from typing import Any

from comfyfleet.gateway._body import JsonLimits, safe_text
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._settings import ServeSettings
from comfyfleet.jobs import Conversion, JobOptions, NewJob, Timeouts, WebhookOption
from comfyfleet.webhooks import ALL_EVENTS, KNOWN_EVENTS, WebhookConfigError, parse_webhook

JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A job id, whole (use `fullmatch`: `$` would let a trailing newline through)."""
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
MAX_TIMEOUT_S = 7 * 86400
"""The longest `timeouts.queued_s` / `timeouts.running_s` a job may ask for: a week."""
_FIELDS = frozenset(
    {"workflow", "id", "priority", "max_attempts", "webhook", "storage", "convert", "timeouts"}
)
_IMAGE_FORMATS = ("webp", "jpeg")

_NODE = {
    "type": "object",
    "required": ["class_type", "inputs"],
    "properties": {"class_type": {"type": "string"}, "inputs": {"type": "object"}},
}
_UI_WORKFLOW = {
    "type": "object",
    "required": ["nodes", "links"],
    "properties": {
        "nodes": {"type": "array", "items": {"type": "object"}},
        "links": {"type": "array"},
        "definitions": {"type": "object", "description": "subgraph definitions"},
    },
}
JOB_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["workflow"],
    "properties": {
        "workflow": {
            "description": "ComfyUI API-format graph (node id -> {class_type, inputs}), or a "
            "workflow saved from the ComfyUI editor (UI format: nodes and links), which the "
            "server converts with the instances' node definitions",
            "anyOf": [
                {"type": "object", "additionalProperties": _NODE},
                _UI_WORKFLOW,
            ],
        },
        "id": {"type": "string", "description": "client-chosen job id (retries are harmless)"},
        "priority": {
            "type": "integer",
            "default": 0,
            "minimum": PRIORITY_RANGE[0],
            "maximum": PRIORITY_RANGE[1],
        },
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
            "properties": {
                "queued_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
                "running_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
            },
        },
    },
}
"""The body of `POST /v1/jobs`, for the OpenAPI docs (the route reads and checks it itself, so
that a bad body gets an answer naming the field rather than a generic validation error)."""


def json_limits(settings: ServeSettings) -> JsonLimits:
    """The limits on a JSON body, from the `serve` settings."""
    return JsonLimits(
        max_bytes=settings.max_body_bytes,
        max_depth=settings.max_json_depth,
        max_items=settings.max_json_items,
        max_string_bytes=settings.max_json_string_bytes,
    )


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
    max_nodes: int = 100_000,
) -> NewJob:
    """The job a request body asks for; `job_id` (from an Idempotency-Key) when it names none.
    Linear in the size of the body (it runs in a worker thread for large ones)."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown fields: {', '.join(unknown)}",
            {"allowed": sorted(_FIELDS)},
        )
    if "workflow" not in body:
        raise ApiError(
            422, "invalid_request", "'workflow' is required (an API-format or UI-format graph)"
        )
    if isinstance(body["workflow"], dict):
        check_size(len(body["workflow"]), max_nodes)
    chosen = body.get("id") or job_id
    job = chosen or uuid.uuid4().hex
    if not isinstance(job, str) or not JOB_ID.fullmatch(job):
        raise ApiError(
            422, "invalid_request", "'id' must be 1-128 letters, digits, '.', '_' or '-'"
        )
    priority = body.get("priority", 0)
    attempts = body.get("max_attempts", default_attempts)
    if not _is_int(priority) or not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        low, high = PRIORITY_RANGE
        raise ApiError(
            422, "invalid_request", f"'priority' must be an integer from {low} to {high}"
        )
    if not _is_int(attempts) or not 1 <= attempts <= 10:
        raise ApiError(422, "invalid_request", "'max_attempts' must be an integer from 1 to 10")
    options = _options(body, default_events, storage_names)
    request = {"workflow": body["workflow"], "priority": priority, "max_attempts": attempts}
    return NewJob(
        id=job,
        workflow=body["workflow"],
        priority=priority,
        max_attempts=attempts,
        request_hash="" if chosen is None else _request_hash(request, options),
        options=options,
    )


def check_size(nodes: int, max_nodes: int) -> None:
    """413 for a workflow of more than `max_nodes` nodes (`serve.max_graph_nodes`)."""
    if nodes > max_nodes:
        raise ApiError(
            413,
            "too_many_nodes",
            f"the workflow has {nodes} nodes; this server takes at most {max_nodes}",
            {"limit": max_nodes, "setting": "serve.max_graph_nodes"},
        )


def _request_hash(request: dict[str, Any], options: JobOptions) -> str:
    request = request | {"options": options.to_json()}
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _options(
    body: dict[str, Any], default_events: Iterable[str], storage_names: Collection[str]
) -> JobOptions:
    options = JobOptions()
    if body.get("webhook") is not None:
        try:
            target = parse_webhook(body["webhook"], default_events=default_events)
        except WebhookConfigError as exc:
            known = [*sorted(KNOWN_EVENTS), ALL_EVENTS]
            details = {"hint": exc.hint, "known_events": known}
            raise ApiError(422, "invalid_webhook", exc.message, details) from exc
        options = options.but(webhook=WebhookOption(target.url, tuple(sorted(target.events))))
    if body.get("storage") is not None:
        name = body["storage"]
        if not isinstance(name, str) or name not in storage_names:
            shown = safe_text(name) if isinstance(name, str) else json.dumps(name)[:200]
            raise ApiError(
                422,
                "invalid_storage",
                f"'storage' must name a configured storage target, not {shown!r}",
                {"targets": sorted(storage_names)},
            )
        options = options.but(storage=name)
    if body.get("convert") is not None:
        options = options.but(convert=_convert(body["convert"]))
    if body.get("timeouts") is not None:
        options = options.but(timeouts=_timeouts(body["timeouts"]))
    return options


def _convert(value: Any) -> Conversion:
    if not isinstance(value, dict) or value.get("format") not in _IMAGE_FORMATS:
        raise ApiError(
            422,
            "invalid_convert",
            '\'convert\' must be {"format": "webp" | "jpeg", "quality": 1-100}',
        )
    quality = value.get("quality", 85)
    if not _is_int(quality) or not 1 <= quality <= 100 or set(value) - {"format", "quality"}:
        raise ApiError(422, "invalid_convert", "'convert.quality' must be an integer from 1 to 100")
    return Conversion(value["format"], quality)


def _timeouts(value: Any) -> Timeouts:
    if not isinstance(value, dict) or set(value) - {"queued_s", "running_s"}:
        raise ApiError(
            422, "invalid_timeouts", "'timeouts' takes 'queued_s' and 'running_s' (seconds)"
        )
    out: dict[str, float] = {}
    for name, seconds in value.items():
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds <= MAX_TIMEOUT_S
            or not math.isfinite(seconds)
        ):
            raise ApiError(
                422,
                "invalid_timeouts",
                f"'timeouts.{name}' must be a number of seconds above 0 and at most "
                f"{MAX_TIMEOUT_S} (a week)",
                {"field": f"timeouts.{name}", "maximum": MAX_TIMEOUT_S},
            )
        out[name] = float(seconds)
    return Timeouts(out.get("queued_s"), out.get("running_s"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
