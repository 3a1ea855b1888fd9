"""The contract's error shape and codes, from the gateway's own `ApiError`s.

Comfy API v2 answers errors as `{"error": {"code", "message", "details"}}` (the gateway's shape
too) but with its own small set of codes: `invalid_workflow` (422), `workflow_format_ui` (422),
`missing_asset` (422), `hash_mismatch` (409), `blob_not_found` (404), `idempotency_key_reuse`
(422), `invalid_request` (400), `queue_full` and `too_many_streams` (429 + Retry-After),
`not_found` (404), `unauthorized` (401), `forbidden` (403). SDKs map those codes to exception
types, so every v2 route raises through `translated`: a gateway code the contract does not know
becomes the contract code of the same meaning, and the gateway's code is kept in
`details.reason` so nothing an operator would grep for is lost.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from comfyfleet.gateway import ApiError

P = ParamSpec("P")
R = TypeVar("R")

_KEPT = frozenset(
    {
        "invalid_workflow",
        "workflow_format_ui",
        "missing_asset",
        "hash_mismatch",
        "blob_not_found",
        "idempotency_key_reuse",
        "invalid_request",
        "queue_full",
        "not_found",
        "unauthorized",
        "forbidden",
        "invalid_cursor",
        "metadata_invalid",
        "payload_too_large",
        "output_unavailable",
        "too_many_streams",
    }
)
"""Codes passed through as they are: the contract's, and the ones the SDK names itself."""

_RENAMED: dict[str, tuple[int, str]] = {
    # a graph the gateway refuses is, to a v2 client, an invalid workflow
    "unsafe_path": (422, "invalid_workflow"),
    "too_many_nodes": (413, "payload_too_large"),
    "input_refused": (422, "invalid_workflow"),
    "input_unreachable": (422, "invalid_workflow"),
    "input_not_found": (422, "invalid_workflow"),
    "input_too_large": (422, "invalid_workflow"),
    "bad_base64": (422, "invalid_workflow"),
    "bad_input_path": (422, "invalid_workflow"),
    "empty_input": (422, "invalid_workflow"),
    "asset_not_found": (422, "missing_asset"),
    "job_not_found": (404, "not_found"),
    "upload_too_large": (413, "payload_too_large"),
    "invalid_idempotency_key": (400, "invalid_request"),
    # one key, one job: a key already spent is reused whatever the body or its age
    "job_conflict": (422, "idempotency_key_reuse"),
    "idempotency_key_expired": (422, "idempotency_key_reuse"),
}

_BY_STATUS = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}


_STATUS_OF = {
    "invalid_workflow": 422,
    "workflow_format_ui": 422,
    "missing_asset": 422,
    "hash_mismatch": 409,
    "blob_not_found": 404,
    "idempotency_key_reuse": 422,
    "invalid_request": 400,
    "not_found": 404,
}
"""The status the contract gives each of its codes (the gateway answers some with another)."""


def v2_error(exc: ApiError) -> ApiError:
    """`exc` in the contract's codes and statuses (the same error when it is in them already)."""
    if exc.code in _KEPT:
        status = _STATUS_OF.get(exc.code, exc.status)
        if status == exc.status:
            return exc
        return ApiError(status, exc.code, exc.message, exc.details, exc.headers)
    status, code = _RENAMED.get(exc.code, (exc.status, _BY_STATUS.get(exc.status, exc.code)))
    if exc.code not in _RENAMED and exc.status in (408, 411, 413, 415, 422):
        status, code = exc.status, "invalid_request"
    details = dict(exc.details) if isinstance(exc.details, dict) else {}
    if exc.details is not None and not isinstance(exc.details, dict):
        details["errors"] = exc.details
    details["reason"] = exc.code
    return ApiError(status, code, exc.message, details, exc.headers)


def translated(route: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """`route` with every `ApiError` it raises put in the contract's codes (FastAPI reads the
    signature through `functools.wraps`, so dependencies and parameters stay as declared)."""

    @functools.wraps(route)
    async def answer(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await route(*args, **kwargs)
        except ApiError as exc:
            raise v2_error(exc) from exc

    return answer


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} '{ident[:200]}'", {"id": ident[:200]})


def invalid(message: str, **details: Any) -> ApiError:
    return ApiError(400, "invalid_request", message, details or None)
