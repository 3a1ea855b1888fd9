"""Talking to one ComfyUI instance over HTTP: queue prompts, wait for them, fetch their files."""

from __future__ import annotations

from comfyfleet.comfy._client import ComfyClient, OutputFile, PromptResult
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

__all__ = [
    "ComfyClient",
    "ComfyError",
    "ComfyProtocolError",
    "ComfyUnavailable",
    "NodeError",
    "OutputFile",
    "PromptFailed",
    "PromptRejected",
    "PromptResult",
    "PromptTimeout",
    "sample_graph",
]
