"""The HTTP gateway: the `/v1` job API, live progress, assets, webhooks, health and docs.

The app and its routers are built from backends handed in (`Service`, the stores); what opens
those backends and runs the app beside the fleet is the composition root, `comfyfleet.roles`.
"""

from __future__ import annotations

from comfyfleet.gateway._app import create_app
from comfyfleet.gateway._assets_api import assets_router
from comfyfleet.gateway._body import JsonLimits, read_json_body
from comfyfleet.gateway._config_api import config_router
from comfyfleet.gateway._errors import ApiError, encodable
from comfyfleet.gateway._intake import (
    check_graph,
    job_answer,
    parse_job,
    submit_job,
    wait_for_end,
)
from comfyfleet.gateway._keys_api import keys_router
from comfyfleet.gateway._live import ClientEvent, JobFeed
from comfyfleet.gateway._models_api import models_router
from comfyfleet.gateway._preview_feed import PreviewFeed
from comfyfleet.gateway._previews import PreviewHub
from comfyfleet.gateway._service import NodeTypes, Service
from comfyfleet.gateway._settings import ServeSettings
from comfyfleet.gateway._sse import EventStreamResponse
from comfyfleet.gateway._submit import JOB_ID, idempotent_id, json_limits
from comfyfleet.gateway._templates_api import templates_router
from comfyfleet.gateway._tenancy import (
    Caller,
    idempotency_secret,
    needs,
    remove_asset,
    socket_caller,
    visible_asset,
    visible_job,
)
from comfyfleet.gateway._uploads import Upload, receive_upload
from comfyfleet.gateway._views import job_view
from comfyfleet.gateway._webhooks_api import webhooks_router

__all__ = [
    "JOB_ID",
    "ApiError",
    "Caller",
    "ClientEvent",
    "EventStreamResponse",
    "JobFeed",
    "JsonLimits",
    "NodeTypes",
    "PreviewFeed",
    "PreviewHub",
    "ServeSettings",
    "Service",
    "Upload",
    "assets_router",
    "check_graph",
    "config_router",
    "create_app",
    "encodable",
    "idempotency_secret",
    "idempotent_id",
    "job_answer",
    "job_view",
    "json_limits",
    "keys_router",
    "models_router",
    "needs",
    "parse_job",
    "read_json_body",
    "receive_upload",
    "remove_asset",
    "socket_caller",
    "submit_job",
    "templates_router",
    "visible_asset",
    "visible_job",
    "wait_for_end",
    "webhooks_router",
]
