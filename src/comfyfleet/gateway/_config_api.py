"""`GET /v1/config`: the settings this gateway runs with, every secret masked.

The gateway does not see the whole settings object (only the composition root does), so it
serves what the root hands it: a function that gives the redacted settings as JSON data. For
admin keys only: folders, addresses and limits are an operator's business.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends

from comfyfleet import __version__
from comfyfleet.auth import ADMIN
from comfyfleet.gateway._tenancy import needs


def config_router(view: Callable[[], dict[str, Any]], *, role: str) -> APIRouter:
    """`view`: the redacted settings; `role`: `serve` or `gateway`, as this process runs."""
    router = APIRouter(tags=["fleet"], dependencies=[Depends(needs(ADMIN))])

    @router.get("/v1/config", summary="The effective settings, secrets masked")
    async def config() -> dict[str, Any]:
        return {"version": __version__, "role": role, "settings": view()}

    return router
