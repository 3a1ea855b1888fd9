"""What a finished prompt left in ComfyUI's history: its status, messages and output files,
read from a `/history` entry (a prompt that ended in error raises instead)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from comfyfleet.comfy._errors import PromptFailed


@dataclass(frozen=True)
class OutputFile:
    """A file a node wrote, as ComfyUI lists it in the history; `kind` is the output key."""

    node_id: str
    filename: str
    subfolder: str
    type: str
    kind: str


@dataclass(frozen=True)
class PromptResult:
    """A finished prompt's history entry: its status, the UI outputs, and the status messages."""

    prompt_id: str
    status: str
    outputs: dict[str, Any]
    messages: list[Any]

    def files(self) -> list[OutputFile]:
        """Every file in every output list, not only "images".

        Nodes put files under whatever key they like ("images", "gifs", "audio", "3d", ...);
        an item is a file when it carries a filename and a type, which is what /view needs.
        """
        return [
            OutputFile(
                node_id=node_id,
                filename=str(item["filename"]),
                subfolder=str(item.get("subfolder") or ""),
                type=str(item["type"]),
                kind=kind,
            )
            for node_id, kind, item in output_items(self.outputs)
            if isinstance(item, dict) and "filename" in item and "type" in item
        ]


def output_items(outputs: Any) -> Iterator[tuple[str, str, Any]]:
    """(node id, output key, item) for every item of every list in a history entry's
    `outputs`, skipping what is not shaped as ComfyUI writes it."""
    if not isinstance(outputs, dict):
        return
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, dict):
            continue
        for kind, items in node_output.items():
            if isinstance(items, list):
                for item in items:
                    yield str(node_id), str(kind), item


def history_result(prompt_id: str, entry: dict[str, Any]) -> PromptResult:
    status = entry.get("status")
    status = status if isinstance(status, dict) else {}
    messages = status.get("messages")
    messages = messages if isinstance(messages, list) else []
    outputs = entry.get("outputs")
    result = PromptResult(
        prompt_id=prompt_id,
        status=str(status.get("status_str") or "unknown"),
        outputs=outputs if isinstance(outputs, dict) else {},
        messages=messages,
    )
    if result.status == "error":
        raise PromptFailed.from_messages(prompt_id, messages)
    return result
