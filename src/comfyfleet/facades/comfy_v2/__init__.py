"""Comfy API v2 in front of the fleet: the contract Comfy-Org's `comfy-api-proxy` and Comfy Cloud
serve, and the `comfy-sdk` Python SDK speaks (`/api/v2/jobs`, `/api/v2/assets`).

A client written for Comfy Cloud points `COMFY_BASE_URL` at the gateway and runs its workflows
on the whole fleet: every v2 job is an ordinary fleet job (listed by `/v1/jobs`, retried, with
the configured webhooks and output storage), taken through the gateway's intake steps, behind
the gateway's API keys like every route. The modules:

    _jobs       submit (single-use Idempotency-Key), read, list (cursor), cancel, workflow,
                health
    _events     the job's live events as the contract's SSE catalog
    _assets     uploads over the content-addressed asset store; outputs as assets
    _from_path  a file already in the fleet's input or output folder, as an asset
    _intake     the v2 body into the gateway's (core/ASSET references, labels, refusals)
    _views      a fleet job as the contract's Job / Output
    _progress   the contract's progress snapshot, folded from the job's events
    _hashes     BLAKE3 (the contract's hash) beside the store's SHA-256
    _errors     the contract's error codes
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.routing import APIRoute

from comfyfleet.assets import AssetStore
from comfyfleet.facades.comfy_v2._assets import assets_routes
from comfyfleet.facades.comfy_v2._context import V2
from comfyfleet.facades.comfy_v2._events import events_routes
from comfyfleet.facades.comfy_v2._from_path import from_path_route
from comfyfleet.facades.comfy_v2._hashes import HashIndex
from comfyfleet.facades.comfy_v2._jobs import jobs_routes
from comfyfleet.gateway import Service

HASH_INDEX_FOLDER = ".comfy-v2-hashes"
"""The BLAKE3 index's folder inside the asset store's folder (beside the files it describes)."""


def comfy_v2_router(
    service: Service, assets: AssetStore, *, hash_dir: Path | None = None
) -> APIRouter:
    """The `/api/v2` routes over `service` (jobs) and `assets` (uploads). `hash_dir` holds the
    BLAKE3 index (default: inside the asset store's folder)."""
    v2 = V2(service, assets, HashIndex(hash_dir or assets.folder / HASH_INDEX_FOLDER))
    router = APIRouter(tags=["comfy-api-v2"])
    jobs_routes(router, v2)
    events_routes(router, v2)
    from_path_route(router, assets_routes(router, v2, assets))
    for route in router.routes:  # its contract is comfy-api-proxy's, not our document's
        if isinstance(route, APIRoute):
            route.include_in_schema = False
    return router


__all__ = ["comfy_v2_router"]
