"""The HTTP gateway: the `/v1` job API, health and readiness, OpenAPI docs at `/docs`."""

from __future__ import annotations

from comfyfleet.gateway._app import create_app
from comfyfleet.gateway._serve import ServeOptions, run_service
from comfyfleet.gateway._service import GatewaySettings, NodeTypes, Service

__all__ = ["GatewaySettings", "NodeTypes", "ServeOptions", "Service", "create_app", "run_service"]
