"""The job's stored events as the messages ComfyUI sends on its WebSocket, one prompt at a time.

A `PromptMessages` follows one job: it knows the job's id (the prompt id clients see) and its
graph (for the node classes ComfyUI names in some messages), and keeps the per-node progress that
ComfyUI's `progress_state` reports in full each time. Store events map as:

    started    -> execution_start
    cached     -> execution_cached
    executing  -> executing, progress_state
    progress   -> progress, progress_state
    executed   -> executed (its outputs as ComfyUI wrote them: `/view` serves them)
    final status -> execution_success | execution_error | execution_interrupted, then executing
                    with no node (see `_shapes.end_messages`)

Retries are not told apart: a prompt whose instance died starts again with a new
`execution_start`; ComfyUI clients wait for the end messages, which come once.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from comfyfleet.jobs import JobEvent, JobProgress

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_TYPES = {"jpeg": 1, "png": 2}
_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def text(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data}, separators=(",", ":"))


def status_message(queue_remaining: int, sid: str | None = None) -> str:
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return text("status", data)


def preview_frame(
    image_format: str, data: bytes, *, prompt_id: str, node: str | None, metadata: bool
) -> bytes | None:
    """A binary preview frame as ComfyUI sends it: event type, then (legacy) the image type or
    (with metadata, for clients that said they support it) a JSON header naming the node."""
    if metadata:
        meta = {
            "node_id": node,
            "display_node_id": node,
            "parent_node_id": None,
            "real_node_id": node,
            "prompt_id": prompt_id,
            "image_type": _MIME.get(image_format, "image/jpeg"),
        }
        header = json.dumps(meta).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(header)) + header + data
    image_type = _IMAGE_TYPES.get(image_format)
    if image_type is None:
        return None  # a format legacy frames cannot name
    return struct.pack(">II", PREVIEW_IMAGE, image_type) + data


class PromptMessages:
    """Translates one job's events into ComfyUI messages (`(type, data)` pairs)."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.node: str | None = None
        """The node running now (for preview metadata)."""
        self._nodes: dict[str, dict[str, Any]] = {}

    def translate(self, event: JobEvent) -> list[tuple[str, dict[str, Any]]]:
        data, at = event.data, int(event.at * 1000)
        pid = self.prompt_id
        if event.kind == "started":
            self._nodes.clear()
            return [("execution_start", {"prompt_id": pid, "timestamp": at})]
        if event.kind == "cached":
            nodes = [str(n) for n in data.get("nodes") or []]
            return [("execution_cached", {"nodes": nodes, "prompt_id": pid, "timestamp": at})]
        if event.kind == "executing":
            node = _node(data)
            if node is None:
                return []
            self._finish_running()
            self.node = node
            self._state(node, value=0, maximum=1, state="running")
            executing = {"node": node, "display_node": node, "prompt_id": pid}
            return [("executing", executing), self._progress_state()]
        if event.kind == "progress":
            step = JobProgress.from_json(data)
            node = step.node or self.node
            value, maximum = step.step, step.steps or 1
            progress = {"value": value, "max": maximum, "prompt_id": pid, "node": node}
            if node is None:
                return [("progress", progress)]
            self._state(node, value=value, maximum=maximum, state="running")
            return [("progress", progress), self._progress_state()]
        if event.kind == "executed":
            node = _node(data)
            output = data.get("output") if isinstance(data.get("output"), dict) else {}
            executed = {"node": node, "display_node": node, "output": output, "prompt_id": pid}
            return [("executed", executed)]
        return []

    def _finish_running(self) -> None:
        for entry in self._nodes.values():
            if entry["state"] == "running":
                entry["state"] = "finished"
                entry["value"] = entry["max"]

    def _state(self, node: str, *, value: int, maximum: int, state: str) -> None:
        self._nodes[node] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node,
            "prompt_id": self.prompt_id,
            "display_node_id": node,
            "parent_node_id": None,
            "real_node_id": node,
        }

    def _progress_state(self) -> tuple[str, dict[str, Any]]:
        nodes = {node: dict(entry) for node, entry in self._nodes.items()}
        return ("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes})


def _node(data: dict[str, Any]) -> str | None:
    node = data.get("node")
    return None if node is None else str(node)
