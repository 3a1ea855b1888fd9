"""The ComfyUI API for the whole fleet: `POST /prompt`, `/ws`, `/history`, `/queue`, `/view`,
uploads, `/object_info`, `/system_stats` and the rest, at the bare paths and under `/api/`, so
that ComfyUI clients, plugins and bots work unchanged against every GPU at once.

Every prompt is a fleet job (durable, placed on any instance with a free slot, retried on an
instance crash, visible in `/v1/jobs`); the prompt id is the job id.
"""

from __future__ import annotations

from comfyfleet.facades.comfyui._files import Folders
from comfyfleet.facades.comfyui._hub import SocketHub
from comfyfleet.facades.comfyui._routes import ComfyApi, comfyui_router
from comfyfleet.facades.comfyui._validate import PromptInvalid, validate_prompt

__all__ = ["ComfyApi", "Folders", "PromptInvalid", "SocketHub", "comfyui_router", "validate_prompt"]
