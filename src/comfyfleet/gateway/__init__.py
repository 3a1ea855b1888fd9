"""The HTTP gateway: the `/v1` job API, live progress, assets, webhooks, health and docs."""

from __future__ import annotations

from comfyfleet.gateway._app import create_app
from comfyfleet.gateway._serve import run_service
from comfyfleet.gateway._service import NodeTypes, Service

__all__ = ["NodeTypes", "Service", "create_app", "run_service"]
