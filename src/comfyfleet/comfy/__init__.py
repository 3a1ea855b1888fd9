"""Talking to one ComfyUI instance over HTTP: queue prompts, wait for them, fetch their files."""

from __future__ import annotations

from comfyfleet.comfy._client import LARGE_PROMPT_NODES, ComfyClient
from comfyfleet.comfy._errors import (
    ComfyError,
    ComfyProtocolError,
    ComfyUnavailable,
    NodeError,
    PromptFailed,
    PromptRejected,
    PromptTimeout,
)
from comfyfleet.comfy._graphs import sample_graph
from comfyfleet.comfy._ids import new_prompt_id
from comfyfleet.comfy._results import OutputFile, PromptResult, output_items
from comfyfleet.comfy._ws import (
    ComfyEvents,
    ComfyMessage,
    Connected,
    Disconnected,
    PreviewFrame,
    StreamItem,
    WebSocketLike,
)

__all__ = [
    "LARGE_PROMPT_NODES",
    "ComfyClient",
    "ComfyError",
    "ComfyEvents",
    "ComfyMessage",
    "ComfyProtocolError",
    "ComfyUnavailable",
    "Connected",
    "Disconnected",
    "NodeError",
    "OutputFile",
    "PreviewFrame",
    "PromptFailed",
    "PromptRejected",
    "PromptResult",
    "PromptTimeout",
    "StreamItem",
    "WebSocketLike",
    "new_prompt_id",
    "output_items",
    "sample_graph",
]
