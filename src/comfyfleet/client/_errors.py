"""The client's exception tree: every error it raises on purpose is a `ComfyfleetClientError`.

    ComfyfleetClientError
    +-- ApiError                  the server answered with an error (status, code, details, node)
    |   +-- JobFailed             the job ran and failed (node, class, exception, traceback)
    |   +-- JobCancelled          the job was cancelled before it could finish
    +-- Timeout                   no answer or no end in time (also a builtin TimeoutError)
    +-- ConnectionError           the server could not be reached (also the builtin one)
    +-- WebhookVerificationError  a received webhook is not genuine

The server's `code` is kept as it was sent, so a program switches on `exc.code`, not on the
message, and a new code on the server needs no new class here.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from typing import Any


class ComfyfleetClientError(Exception):
    """Base of every error the client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ApiError(ComfyfleetClientError):
    """The server refused a request: `status` (HTTP), `code` (the server's error code),
    `message`, `details` (whatever the server added: the field, the limit, the known names) and
    `node_id` when the error is about one node of the workflow.

    `status` is None for the job errors below, which arrive in a job record, not as an
    HTTP error."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: Any = None,
        *,
        node_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
        self.node_id = node_id

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class JobFailed(ApiError):
    """The job failed: `job` is its record; `node_id`, `class_type`, `exception_type` and
    `traceback` (a list of lines, empty when the server sent none) say where and why."""

    def __init__(self, job: Any, error: Mapping[str, Any]) -> None:
        node = error.get("node_id")
        super().__init__(
            None,
            str(error.get("code") or "failed"),
            str(error.get("message") or "the job failed"),
            dict(error),
            node_id=None if node is None else str(node),
        )
        self.job = job
        self.job_id = str(getattr(job, "id", ""))
        self.class_type: str | None = _text(error.get("node_type"))
        self.exception_type: str | None = _text(error.get("exception_type"))
        trace = error.get("traceback")
        self.traceback: list[str] = [str(line) for line in trace] if isinstance(trace, list) else []

    def __str__(self) -> str:
        return f"job {self.job_id} failed: {self.code}: {self.message}"


class JobCancelled(ApiError):
    """The job was cancelled (by this client or another) before it finished."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.job_id = str(getattr(job, "id", ""))
        super().__init__(None, "cancelled", f"job {self.job_id} was cancelled")

    def __str__(self) -> str:
        return self.message


class Timeout(ComfyfleetClientError, builtins.TimeoutError):
    """A request got no answer in time, or a job did not end within the time given. `job_id`
    names the job that is still running, when there is one: follow it later with
    `client.job(job_id)`."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class ConnectionError(ComfyfleetClientError, builtins.ConnectionError):
    """The server could not be reached (or the connection broke) after every retry."""


class WebhookVerificationError(ComfyfleetClientError):
    """A received webhook is missing a header, is too old or too new, or its signature does not
    match the secret: answer it with a 4xx and drop it."""


def api_error(status: int, body: bytes) -> ApiError:
    """The error an HTTP answer of status >= 400 stands for, from the server's
    `{"error": {"code", "message", "details"}}` shape (or whatever else came back)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        text = body.decode("utf-8", "replace").strip()[:300] or "(empty body)"
        return ApiError(status, f"http_{status}", f"the server answered {status}: {text}")
    details = error.get("details")
    node = details.get("node_id") if isinstance(details, dict) else None
    return ApiError(
        status,
        str(error.get("code") or f"http_{status}"),
        str(error.get("message") or f"HTTP {status}"),
        details,
        node_id=None if node is None else str(node),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
