"""Checking a submitted workflow before it is queued, and preparing it for an instance.

A bad graph is the client's error and must be answered at once (400/422 naming the node and the
input), never discovered later on an instance. ComfyUI's own validation still runs on submit; this
catches what can be known without an instance and what ComfyUI answers badly (a UI-format graph,
a link to a missing node, an unknown class when the schemas are known).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from comfyfleet.errors import ComfyfleetError


class GraphError(ComfyfleetError):
    """A workflow that cannot run. `status` is the HTTP status the gateway answers with."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        node_id: str | None = None,
        input_name: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.node_id = node_id
        self.input_name = input_name

    def details(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "input": self.input_name}


def _is_ui_format(workflow: Mapping[str, Any]) -> bool:
    return isinstance(workflow.get("nodes"), list) and "links" in workflow


def _check_links(
    node_id: str, class_type: str, inputs: Mapping[str, Any], workflow: Mapping[str, Any]
) -> None:
    for name, value in inputs.items():
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)):
            continue
        source = str(value[0])
        if source not in workflow:
            raise GraphError(
                f"node {node_id} ({class_type}): input '{name}' links to node {source}, "
                "which is not in the workflow",
                node_id=node_id,
                input_name=name,
            )


def check_workflow(workflow: Any, *, known_classes: Collection[str] | None = None) -> None:
    """Raise :class:`GraphError` unless `workflow` is a runnable API-format graph."""
    if not isinstance(workflow, dict) or not workflow:
        raise GraphError("workflow must be a non-empty JSON object of nodes", status=422)
    if _is_ui_format(workflow):
        raise GraphError(
            "this is a UI-format workflow (nodes and links); the API needs the API format",
            status=422,
            hint="in ComfyUI use 'Export (API)' / 'Save (API Format)'",
        )
    for node_id, node in workflow.items():
        if not isinstance(node, dict):
            raise GraphError(
                f"node {node_id}: must be an object with class_type and inputs",
                node_id=str(node_id),
            )
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise GraphError(f"node {node_id}: class_type missing", node_id=str(node_id))
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise GraphError(
                f"node {node_id} ({class_type}): inputs must be an object", node_id=str(node_id)
            )
        if known_classes is not None and class_type not in known_classes:
            raise GraphError(
                f"node {node_id}: unknown node type '{class_type}'",
                node_id=str(node_id),
                hint="install the custom node that provides it, or fix the class name",
            )
        _check_links(str(node_id), class_type, inputs, workflow)
