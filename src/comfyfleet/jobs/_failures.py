"""What a failed attempt becomes in a job's `error`, decided in one place.

A job's error is a :class:`JobError`: a code a program can switch on, a message a person can read
(naming the node, its class and the exception where there is one), and whether another attempt
could help. Node errors and rejected graphs come from ComfyUI; everything else that can go wrong
while a lane handles a job goes through :func:`attempt_error`, so no exception, expected or not,
can leave a job leased with nothing working on it.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.comfy import ComfyError, PromptRejected

_SERVER_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:]+){2,}[\\/]?")
"""An absolute path of two or more components, as ComfyUI's messages quote them."""

_NOT_SENDABLE = (ValueError, TypeError, UnicodeError, OverflowError, RecursionError)
"""What encoding a job's graph for ComfyUI raises when the graph holds something JSON or HTTP
cannot carry (a non-finite number, a lone surrogate): the same job fails the same way again."""

_TRACEBACK_LINES = 50
"""The most traceback entries a job's error keeps (the innermost ones)."""

_NAME_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ})
"""File errors caused by a name the job chose, not by the machine."""


@dataclass(frozen=True)
class JobError:
    """A failed attempt: what a client sees in the job's `error` field."""

    code: str
    message: str
    retryable: bool
    details: dict[str, Any] = field(default_factory=dict)
    """Extra fields shown beside code and message (node_id, node_type, instance, ...)."""

    @classmethod
    def from_dict(cls, error: dict[str, Any], retryable: bool) -> JobError:
        """The error a dict of the stored shape describes (code and message, plus details)."""
        details = {k: v for k, v in error.items() if k not in ("code", "message", "retryable")}
        message = str(error.get("message") or error.get("code") or "the attempt failed")
        return cls(str(error.get("code") or "error"), message, retryable, details)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "retryable": self.retryable, **self.details} | {
            "message": self.message
        }


def scrub_paths(text: str) -> str:
    """`text` with absolute paths reduced to their last component: ComfyUI's messages quote
    the server's folders, which are nobody's business but the operator's."""
    return _SERVER_PATH.sub(lambda m: ".../" + m.group(0).rstrip("/\\").rsplit("/", 1)[-1], text)


def node_error(data: dict[str, Any]) -> JobError:
    """A node that raised. ComfyUI's traceback is kept (its lines with the server's paths
    scrubbed, the last `_TRACEBACK_LINES`): it is what the node's author needs to see."""
    node_id, node_type = data.get("node_id"), data.get("node_type")
    exc_type = data.get("exception_type") or "Error"
    message = scrub_paths(str(data.get("exception_message") or "").strip())
    details: dict[str, Any] = {
        "node_id": node_id,
        "node_type": node_type,
        "exception_type": exc_type,
        "exception_message": message,
    }
    trace = data.get("traceback")
    if isinstance(trace, list) and trace:
        details["traceback"] = [scrub_paths(str(line)) for line in trace[-_TRACEBACK_LINES:]]
    return JobError(
        "node_error",
        f"node {node_id} ({node_type}): {exc_type}: {message}",
        retryable=False,
        details=details,
    )


def rejection(exc: PromptRejected) -> JobError:
    first = exc.node_errors[0] if exc.node_errors else None
    return JobError(
        "invalid_workflow",
        scrub_paths(exc.message),
        retryable=False,
        details={
            "node_id": first.node_id if first else None,
            "node_type": first.class_type if first else None,
            "input": first.input_name if first else None,
        },
    )


def attempt_error(
    exc: BaseException, *, instance: int, doing: str, from_job: bool = False
) -> JobError:
    """The error of an attempt that raised `exc` while the lane was `doing` something with it.

    ComfyUI rejecting the graph is the client's; ComfyUI unreachable is the instance's (run it
    elsewhere); where the lane was handling the job's own content (`from_job`: preparing or
    sending its graph), a value that cannot be encoded or a file name the system refuses is the
    client's too; anything else is a fault of ours that another attempt may not hit."""
    where = {"instance": instance}
    if isinstance(exc, PromptRejected):
        return rejection(exc)
    if isinstance(exc, ComfyError):
        message = f"instance {instance} failed while {doing}: {scrub_paths(exc.message)}"
        return JobError("instance_unavailable", message, retryable=True, details=where)
    if from_job and isinstance(exc, _NOT_SENDABLE):
        reason = scrub_paths(str(exc)) or type(exc).__name__
        return JobError(
            "invalid_job",
            f"the job cannot be sent to ComfyUI: {type(exc).__name__}: {reason}",
            retryable=False,
            details=where,
        )
    if from_job and isinstance(exc, OSError) and exc.errno in _NAME_ERRNOS:
        message = f"a file name in the job was refused: {scrub_paths(str(exc))}"
        return JobError("invalid_job", message, retryable=False, details=where)
    message = f"internal error while {doing}: {type(exc).__name__}: {scrub_paths(str(exc))}"
    return JobError("internal_error", message, retryable=True, details=where)
