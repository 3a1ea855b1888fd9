"""`/v1/models` and `/v1/presets`: what model files are there, which presets are complete,
installing a preset (as a job whose events carry the progress), and deleting a file.

The install route does not download by itself: it calls the injected `start_install(preset)`,
which starts the work (the app backs it with a job) and returns the id to follow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends

from comfyfleet.auth import ADMIN
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._tenancy import needs
from comfyfleet.models import ModelError, ModelLibrary, ModelNotFound, PresetNotFound

StartInstall = Callable[[str], Awaitable[str]]
"""`preset name -> id of the job that installs it`."""


def models_router(library: ModelLibrary, start_install: StartInstall) -> APIRouter:
    router = APIRouter(tags=["models"])

    @router.get("/v1/models", summary="Model files on disk")
    async def list_models(type: str | None = None, verify: bool = False) -> dict[str, Any]:
        if type is not None and type not in library.folders.types:
            known = ", ".join(sorted(library.folders.types))
            raise ApiError(
                400, "unknown_folder_type", f"unknown folder type '{type}'", {"known": known}
            )
        entries = await asyncio.to_thread(library.models, type, verify=verify)
        return {"models": [_public(e.to_dict()) for e in entries]}

    @router.get("/v1/presets", summary="Presets and whether their files are all there")
    async def list_presets(verify: bool = False) -> dict[str, Any]:
        statuses = await asyncio.to_thread(library.presets, verify=verify)
        presets = []
        for status in statuses:
            data = status.to_dict()
            data["files"] = [_public(f) for f in data["files"]]
            presets.append(data)
        return {"presets": presets}

    @router.post(
        "/v1/presets/{name}/install",
        status_code=202,
        summary="Install a preset",
        dependencies=[Depends(needs(ADMIN))],
    )
    async def install(name: str) -> dict[str, Any]:
        try:
            preset = library.catalog.preset(name)
        except PresetNotFound as exc:
            raise ApiError(404, "preset_not_found", exc.message, {"hint": exc.hint}) from exc
        job_id = await start_install(name)
        return {"id": job_id, "preset": preset.name, "size": preset.size}

    @router.delete(
        "/v1/models/{folder_type}/{filename:path}",
        summary="Delete a model file",
        dependencies=[Depends(needs(ADMIN))],
    )
    async def delete(folder_type: str, filename: str) -> dict[str, Any]:
        try:
            await asyncio.to_thread(library.remove, folder_type, filename)
        except ModelNotFound as exc:
            raise ApiError(404, "model_not_found", exc.message) from exc
        except ModelError as exc:
            raise ApiError(400, "invalid_model_path", exc.message) from exc
        # Names relative to the folder type only: the server's own paths are not a client's.
        return {"deleted": {"folder_type": folder_type, "name": filename}}

    return router


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """A model entry without the server's absolute path."""
    return {k: v for k, v in entry.items() if k != "path"}
