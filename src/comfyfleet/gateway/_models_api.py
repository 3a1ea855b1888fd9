"""`/v1/models` and `/v1/presets`: what model files are there, which presets are complete,
installing a preset or one file from a URL (as a job whose events carry the progress), and
deleting a file.

The install routes do not download by themselves: they call the injected `start_install(preset)`
and `start_model_install(spec)`, which start the work (the app backs each with a job) and return
the id to follow. A URL to install is a client's choice, held to what a model URL in a job's
graph is held to: http(s) to an address the network policy allows, `hf://` or `civitai://`
(other sources belong in a manifest, which is the operator's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from comfyfleet.auth import ADMIN
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._json_models import body_doc, read_model
from comfyfleet.gateway._model_inputs import check_client_source
from comfyfleet.gateway._tenancy import needs
from comfyfleet.models import ModelError, ModelLibrary, ModelNotFound, PresetNotFound
from comfyfleet.netguard import NetPolicy

StartInstall = Callable[[str], Awaitable[str]]
"""`preset name -> id of the job that installs it`."""
StartModelInstall = Callable[[dict[str, Any]], Awaitable[str]]
"""`{source, type, filename, size, sha256} -> id of the job that downloads it`."""


class ModelInstall(BaseModel):
    """What `POST /v1/models/install` takes."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        min_length=1,
        max_length=4096,
        description="https://..., hf://org/repo/path[@revision] or civitai://VERSION_ID",
    )
    type: str = Field(
        min_length=1, max_length=100, description="the folder type: checkpoints, loras, vae, ..."
    )
    filename: str | None = Field(
        default=None, min_length=1, max_length=255, description="default: the URL's file name"
    )
    size: int | None = Field(default=None, ge=1, description="bytes, checked when given")
    sha256: str | None = Field(
        default=None, pattern="^[0-9a-fA-F]{64}$", description="checked when given"
    )


def models_router(
    library: ModelLibrary,
    start_install: StartInstall,
    *,
    start_model_install: StartModelInstall | None = None,
    net_policy: NetPolicy | None = None,
) -> APIRouter:
    router = APIRouter(tags=["models"])
    policy = net_policy or NetPolicy()

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

    if start_model_install is not None:
        _install_route(router, library, start_model_install, policy)

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


def _install_route(
    router: APIRouter, library: ModelLibrary, start_model: StartModelInstall, policy: NetPolicy
) -> None:
    @router.post(
        "/v1/models/install",
        status_code=202,
        summary="Download one model file from a URL",
        dependencies=[Depends(needs(ADMIN))],
        openapi_extra=body_doc(ModelInstall),
    )
    async def install_model(request: Request) -> dict[str, Any]:
        """202 with the id of the job that downloads it (progress on its event stream,
        as `downloading` events); the file lands in the folder of `type`."""
        body = await read_model(request, ModelInstall)
        if body.type not in library.folders.types:
            known = ", ".join(sorted(library.folders.types))
            raise ApiError(
                422,
                "unknown_folder_type",
                f"unknown folder type '{body.type}'",
                {"known": known},
            )
        details = {"source": body.source}
        await check_client_source(
            body.source, policy, where="source", details=details, what="a model install"
        )
        try:
            item = library.source_item(
                body.source,
                folder_type=body.type,
                filename=body.filename,
                size=body.size,
                sha256=body.sha256,
            )
        except ModelError as exc:
            raise ApiError(422, "invalid_model_source", exc.message, details) from exc
        name = item.dest.relative_to(library.folders.primary(body.type)).as_posix()
        job_id = await start_model(body.model_dump() | {"filename": name})
        return {"id": job_id, "type": body.type, "filename": name}
