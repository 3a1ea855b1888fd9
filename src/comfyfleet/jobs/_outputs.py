"""Turning a finished prompt's history into the job's outputs: every file of every type."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

_FILE_KEYS = frozenset({"filename", "type"})


def outputs_from_history(job_id: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Files (images, gifs, video, audio, 3d ...) and texts from every output node.

    Files written under the job's own prefix are addressed by `/v1/outputs/{job}/{path}`.
    """
    found: list[dict[str, Any]] = []
    for node_id, output in (entry.get("outputs") or {}).items():
        if not isinstance(output, dict):
            continue
        for kind, items in output.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and _FILE_KEYS <= set(item):
                    found.append(_file(job_id, str(node_id), kind, item))
                elif isinstance(item, str) and kind == "text":
                    found.append({"node_id": str(node_id), "kind": "text", "text": item})
    return found


def _file(job_id: str, node_id: str, kind: str, item: dict[str, Any]) -> dict[str, Any]:
    subfolder = str(item.get("subfolder") or "")
    filename = str(item["filename"])
    out: dict[str, Any] = {
        "node_id": node_id,
        "kind": kind,
        "filename": filename,
        "subfolder": subfolder,
        "type": str(item["type"]),
    }
    if item["type"] == "output" and (subfolder == job_id or subfolder.startswith(job_id + "/")):
        relative = (subfolder[len(job_id) :].strip("/") + "/" + filename).lstrip("/")
        out["path"] = relative
        out["url"] = f"/v1/outputs/{quote(job_id)}/{quote(relative)}"
    return out
