"""`GET /metrics`: the gateway's route, and the small app an agent serves on its own port.

The route renders after refreshing what is read at scrape time (see `_snapshot`): a scrape is
late by `scrape_wait_s` at most when the store is slow, and never holds up another request.
On the gateway, with API keys on, it needs an `admin` key (its numbers are every key's); list
`/metrics` in `auth.public_paths` to let a scraper in without one. An agent's port serves
nothing else, and no secret: bind it where only the scraper reaches it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from comfyfleet.auth import ADMIN
from comfyfleet.gateway import needs
from comfyfleet.metrics._registry import Metrics

PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which `generate_latest` writes and every Prometheus reads."""


def metrics_router(metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["fleet"], dependencies=[Depends(needs(ADMIN))])

    @router.get(PATH, include_in_schema=False)
    async def scrape() -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    return router


def metrics_app(metrics: Metrics) -> Starlette:
    """An app that answers `GET /metrics` and nothing else (an agent's metrics port)."""

    async def scrape(request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    return Starlette(routes=[Route(PATH, scrape, methods=["GET"])])
