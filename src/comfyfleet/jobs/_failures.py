"""What a failed prompt becomes in a job's `error`: the node, its class, the exception and a
message that names them, so a client can show it as it is."""

from __future__ import annotations

from typing import Any

from comfyfleet.comfy import PromptRejected


def node_error(data: dict[str, Any]) -> dict[str, Any]:
    node_id, node_type = data.get("node_id"), data.get("node_type")
    exc_type = data.get("exception_type") or "Error"
    message = str(data.get("exception_message") or "").strip()
    return {
        "code": "node_error",
        "retryable": False,
        "node_id": node_id,
        "node_type": node_type,
        "exception_type": exc_type,
        "message": f"node {node_id} ({node_type}): {exc_type}: {message}",
    }


def rejection(exc: PromptRejected) -> dict[str, Any]:
    first = exc.node_errors[0] if exc.node_errors else None
    return {
        "code": "invalid_workflow",
        "retryable": False,
        "message": exc.message,
        "node_id": first.node_id if first else None,
        "node_type": first.class_type if first else None,
        "input": first.input_name if first else None,
    }
