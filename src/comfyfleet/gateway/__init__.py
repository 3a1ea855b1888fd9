"""The HTTP gateway: the `/v1` job API, live progress, assets, webhooks, health and docs.

The app and its routers are built from backends handed in (`Service`, the stores); what opens
those backends and runs the app beside the fleet is the composition root, `comfyfleet.roles`.
"""

from __future__ import annotations

from comfyfleet.gateway._app import create_app
from comfyfleet.gateway._assets_api import assets_router
from comfyfleet.gateway._models_api import models_router
from comfyfleet.gateway._preview_feed import PreviewFeed
from comfyfleet.gateway._service import NodeTypes, Service
from comfyfleet.gateway._settings import ServeSettings
from comfyfleet.gateway._tenancy import idempotency_secret
from comfyfleet.gateway._views import job_view
from comfyfleet.gateway._webhooks_api import webhooks_router

__all__ = [
    "NodeTypes",
    "PreviewFeed",
    "ServeSettings",
    "Service",
    "assets_router",
    "create_app",
    "idempotency_secret",
    "job_view",
    "models_router",
    "webhooks_router",
]
