"""Errors raised while talking to one ComfyUI instance.

ComfyUI reports problems in three different shapes (transport failures, a 400 with validation
errors, and a history entry whose status is "error"). Each gets its own exception so callers can
tell "retry elsewhere" from "the user's graph is wrong" from "a node blew up while running", and
each turns ComfyUI's nested JSON into one line a person can act on, while keeping the structured
data for callers that pass it on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from comfyfleet.errors import ComfyfleetError

_EXCERPT_CHARS = 200
# ComfyUI names the offending node of a top-level error only inside free text: "Node ID '#7'".
_NODE_ID_IN_DETAILS = re.compile(r"#([^'\s]+)")


def excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """Shorten a response body for an error message; whole HTML error pages help nobody."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class ComfyError(ComfyfleetError):
    """Base of every error about a ComfyUI instance or a prompt run on it."""


class ComfyUnavailable(ComfyError):
    """ComfyUI did not answer: refused, reset, timed out. Usually worth retrying or restarting."""


class ComfyProtocolError(ComfyError):
    """ComfyUI answered, but not with what its API promises (5xx, non-JSON, odd status)."""

    def __init__(
        self, message: str, *, status: int | None, body: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.body_excerpt = excerpt(body)


class PromptTimeout(ComfyError):
    """A prompt was accepted but did not reach the history in time; it may still be running."""

    def __init__(self, message: str, *, prompt_id: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.prompt_id = prompt_id


@dataclass(frozen=True)
class NodeError:
    """One validation error ComfyUI attached to a node of a rejected prompt."""

    node_id: str
    class_type: str
    type: str
    message: str
    details: str
    input_name: str | None

    def describe(self) -> str:
        """Say what is wrong in the words a graph author uses: node, class, input."""
        where = f"node {self.node_id} ({self.class_type})"
        if self.type == "required_input_missing" and self.input_name:
            return f"{where}: input '{self.input_name}' missing"
        what = self.message
        details = self.details
        if self.input_name:
            # ComfyUI often repeats the input name at the start of details; say it once.
            for prefix in (f"{self.input_name}: ", f"{self.input_name}, "):
                details = details.removeprefix(prefix)
            if details == self.input_name:
                details = ""
            what = f"input '{self.input_name}': {what}"
        return f"{where}: {what}: {excerpt(details)}" if details else f"{where}: {what}"


def _node_errors(raw: Any) -> list[NodeError]:
    if not isinstance(raw, dict):
        return []
    found: list[NodeError] = []
    for node_id, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        class_type = str(entry.get("class_type", "?"))
        for error in entry.get("errors") or []:
            if not isinstance(error, dict):
                continue
            extra = error.get("extra_info")
            input_name = extra.get("input_name") if isinstance(extra, dict) else None
            found.append(
                NodeError(
                    node_id=str(node_id),
                    class_type=class_type,
                    type=str(error.get("type", "")),
                    message=str(error.get("message", "")),
                    details=str(error.get("details", "")),
                    input_name=str(input_name) if input_name is not None else None,
                )
            )
    return found


class PromptRejected(ComfyError):
    """ComfyUI refused to queue a prompt (HTTP 400): the graph itself is wrong for this instance.

    Retrying elsewhere only helps when the other instance has different nodes or models
    installed, so callers should normally report this to whoever wrote the graph.
    """

    def __init__(
        self,
        message: str,
        *,
        body: str,
        error: dict[str, Any],
        node_errors: list[NodeError],
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.body = body
        self.error = error
        self.node_errors = node_errors

    @classmethod
    def from_response(
        cls, body: str, data: dict[str, Any], prompt: dict[str, Any]
    ) -> PromptRejected:
        """Build the one-line reason from ComfyUI's 400 answer to POST /prompt.

        Node errors are the precise ones, so the first of them wins; the top-level error only
        names the node in free text (unknown class, missing class_type), so the submitted prompt
        is used to name its class.
        """
        raw_error = data.get("error")
        error = raw_error if isinstance(raw_error, dict) else {"message": str(raw_error)}
        node_errors = _node_errors(data.get("node_errors"))
        hint: str | None = None
        if node_errors:
            reason = node_errors[0].describe()
            if len(node_errors) > 1:
                reason += f" (and {len(node_errors) - 1} more errors)"
        else:
            reason, hint = _describe_top_level(error, prompt)
        return cls(
            f"ComfyUI rejected the prompt: {reason}",
            body=body,
            error=error,
            node_errors=node_errors,
            hint=hint,
        )


def _describe_top_level(error: dict[str, Any], prompt: dict[str, Any]) -> tuple[str, str | None]:
    message = str(error.get("message") or "no reason given")
    details = str(error.get("details") or "")
    match = _NODE_ID_IN_DETAILS.search(details)
    if error.get("type") != "invalid_prompt" or match is None:
        return (f"{message}: {excerpt(details)}" if details else message), None
    node_id = match.group(1)
    node = prompt.get(node_id)
    class_type = node.get("class_type") if isinstance(node, dict) else None
    if class_type is None:
        return f"node {node_id}: {message}", None
    if "does not exist" in message:
        return (
            f"node {node_id} ({class_type}): unknown node class",
            f"install the custom node that provides {class_type!r} or fix the class name",
        )
    return f"node {node_id} ({class_type}): {message}", None


class PromptFailed(ComfyError):
    """A queued prompt ran and a node raised (or the run was interrupted).

    The fields come from ComfyUI's `execution_error` status message so a caller can show the
    node and the exception without digging through the history entry.
    """

    def __init__(
        self,
        message: str,
        *,
        prompt_id: str,
        node_id: str | None,
        node_type: str | None,
        exception_type: str,
        exception_message: str,
        traceback: list[str] | None = None,
        interrupted: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback or []
        self.interrupted = interrupted

    @classmethod
    def from_messages(cls, prompt_id: str, messages: list[Any]) -> PromptFailed:
        """Find why a prompt failed in its history status messages, `[event, data]` pairs."""
        for event, data in _events(messages):
            if event == "execution_error":
                node_id, node_type = _opt_str(data.get("node_id")), _opt_str(data.get("node_type"))
                exc_type = str(data.get("exception_type") or "Exception")
                exc_message = str(data.get("exception_message") or "").strip()
                trace = data.get("traceback")
                return cls(
                    f"{_where(node_id, node_type)}: {exc_type}: {exc_message}",
                    prompt_id=prompt_id,
                    node_id=node_id,
                    node_type=node_type,
                    exception_type=exc_type,
                    exception_message=exc_message,
                    traceback=[str(line) for line in trace] if isinstance(trace, list) else None,
                )
            if event == "execution_interrupted":
                node_id, node_type = _opt_str(data.get("node_id")), _opt_str(data.get("node_type"))
                return cls(
                    f"{_where(node_id, node_type)}: interrupted",
                    prompt_id=prompt_id,
                    node_id=node_id,
                    node_type=node_type,
                    exception_type="Interrupted",
                    exception_message="execution was interrupted",
                    interrupted=True,
                )
        return cls(
            f"prompt {prompt_id} failed and ComfyUI recorded no error message",
            prompt_id=prompt_id,
            node_id=None,
            node_type=None,
            exception_type="Unknown",
            exception_message="",
        )


def _events(messages: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    pairs: list[tuple[str, dict[str, Any]]] = []
    for item in messages:
        if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], dict):
            pairs.append((str(item[0]), item[1]))
    return pairs


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _where(node_id: str | None, node_type: str | None) -> str:
    if node_id is None:
        return "unknown node"
    return f"node {node_id} ({node_type})" if node_type else f"node {node_id}"
