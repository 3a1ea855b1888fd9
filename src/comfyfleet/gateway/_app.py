"""The HTTP gateway: one ASGI app made of the `/v1` routers, health, readiness and docs.

Every error a client can cause is a 4xx with `{"error": {"code", "message", "details"}}`; a fault
of the server's own is a 500 in the same shape, logged once (see `_guard`).
With API keys enabled, every route but the public ones (`/health`) needs
`Authorization: Bearer <key>`; the check wraps the whole app, so a route added later cannot
forget it. What no route matches goes to the `fallback` app where one is given (the `serve` and
`gateway` roles hand it the home instance's ComfyUI), else it is the gateway's 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from comfyfleet import __version__
from comfyfleet.auth import DEFAULT_PUBLIC_PATHS, ApiKeyMiddleware, KeyVerifier, Sessions
from comfyfleet.gateway._control_api import control_router
from comfyfleet.gateway._errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
)
from comfyfleet.gateway._events_api import events_router
from comfyfleet.gateway._guard import RequestGuard
from comfyfleet.gateway._job_actions_api import job_actions_router
from comfyfleet.gateway._jobs_api import jobs_router
from comfyfleet.gateway._openapi import document_errors
from comfyfleet.gateway._service import Service
from comfyfleet.gateway._stats_api import stats_router
from comfyfleet.gateway._views import job_view
from comfyfleet.jobs import JobStatus


def create_app(
    service: Service,
    *,
    routers: tuple[APIRouter, ...] = (),
    keys: KeyVerifier | None = None,
    public_paths: tuple[str, ...] = DEFAULT_PUBLIC_PATHS,
    sessions: Sessions | None = None,
    fallback: ASGIApp | None = None,
) -> ASGIApp:
    """The gateway app. `routers` adds optional features (assets, webhooks, models) built by
    whoever has their backends; `keys` turns the API-key check on, and `sessions` lets browsers
    sign in at `/login` as well. `fallback` answers what no route matches (HTTP and WebSocket)
    instead of the 404, behind the same middleware and key check as every route."""
    app = FastAPI(
        title="comfyfleet",
        version=__version__,
        description="Run ComfyUI workflows on a supervised fleet of instances.",
    )
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(RequestGuard, body_timeout_s=service.settings.body_timeout_s)
    app.include_router(jobs_router(service))
    app.include_router(job_actions_router(service))
    app.include_router(
        events_router(
            service.store,
            view=lambda job: job_view(job, storage=service.storage),
            previews=service.previews,
            heartbeat_s=service.settings.sse_heartbeat_s,
            closing=service.closing,
            streams=service.streams,
        )
    )
    for router in routers:
        app.include_router(router)
    app.include_router(_fleet_router(service))
    app.include_router(control_router(service, wake=lambda: service.wake_commands()))
    app.include_router(stats_router(service))
    if fallback is not None:
        app.router.default = fallback
    document_errors(app, auth=keys is not None, public_paths=public_paths)
    if keys is None:
        return app
    return ApiKeyMiddleware(app, keys, public_paths=public_paths, sessions=sessions)


def _fleet_router(service: Service) -> APIRouter:
    router = APIRouter(tags=["fleet"])
    store = service.store

    @router.get("/v1/instances", summary="The agents, their ComfyUI instances and their states")
    async def instances() -> dict[str, Any]:
        return (await service.fleet()).to_dict()

    @router.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready", summary="At least one instance is ready and the queue has room")
    async def ready() -> JSONResponse:
        serving = len((await service.fleet()).serving())
        queued = await store.count(JobStatus.QUEUED)
        ok = serving > 0 and queued < service.settings.max_queued
        return JSONResponse(
            {"ready": ok, "instances_serving": serving, "queued": queued},
            status_code=200 if ok else 503,
        )

    # Load balancers and uptime checks probe with HEAD: the same answers, without a body (the
    # server drops it). Left out of the docs, where GET already describes them.
    router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    router.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)
    return router
