"""OpenAI's error shape, from the gateway's.

OpenAI answers every error as `{"error": {"message", "type", "param", "code"}}`; clients show
`message`, and some use `param` to point at the field at fault. The routes here raise the
gateway's `ApiError` like every route (with `details.param` naming the OpenAI field), and the
edge (`_edge`) rewrites every error answer under the prefix into OpenAI's shape, the key
middleware's 401 and the gateway's 404s, 413s and 500s included: one translation, so no answer
under the prefix comes in the other shape.

`type` follows the status: `invalid_request_error` for what the client sent (OpenAI answers
invalid parameters with 400, so the gateway's 422s become 400s here), `invalid_request_error`
with code `invalid_api_key` for a missing or wrong key (as OpenAI answers it),
`permission_error` for a key without the scope, `rate_limit_error` for a full queue (429, with
Retry-After), `server_error` for the fleet's failures. `code` keeps the gateway's code
(`queue_full`, `model_not_found`, ...), so what an operator greps for in the logs matches.
"""

from __future__ import annotations

import json
from typing import Any

from comfyfleet.gateway import ApiError, encodable

_RENAMED = {"unauthorized": "invalid_api_key", "invalid_parameter": "invalid_value"}


def error_type(status: int) -> str:
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_status(status: int) -> int:
    return 400 if status == 422 else status


def openai_body(code: str, message: str, details: Any, status: int) -> dict[str, Any]:
    param = details.get("param") if isinstance(details, dict) else None
    return {
        "error": {
            "message": encodable(message),
            "type": error_type(status),
            "param": param if isinstance(param, str) else None,
            "code": _RENAMED.get(code, code),
        }
    }


def translate(status: int, body: bytes) -> tuple[int, bytes] | None:
    """The OpenAI-shaped (status, body) of a gateway error answer; None when `body` is not
    one (an answer already in OpenAI's shape, or not JSON)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict) or "type" in error or not isinstance(error.get("code"), str):
        return None
    message = error.get("message")
    text = message if isinstance(message, str) else str(error["code"])
    new_status = openai_status(status)
    shaped = openai_body(error["code"], text, error.get("details"), new_status)
    return new_status, json.dumps(shaped).encode()


def invalid(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    """A 400 about one field of the request (`param`: its OpenAI name)."""
    return ApiError(400, code, message, {"param": param})
