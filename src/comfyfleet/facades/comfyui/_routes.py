"""The ComfyUI API's routes, at the bare paths and under `/api/` as current ComfyUI serves both.

Every route is a thin translation onto the fleet's job model and registry (see the modules
beside this one); auth is the gateway's (keys, scopes) like every other route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from comfyfleet.assets import LOADER_INPUTS, AssetStore
from comfyfleet.auth import READ, SUBMIT
from comfyfleet.facades.comfyui import _files, _info, _lists
from comfyfleet.facades.comfyui._hub import SocketHub
from comfyfleet.facades.comfyui._prompt import prompt_answer, take_prompt
from comfyfleet.facades.comfyui._shapes import history_entry
from comfyfleet.facades.comfyui._socket import serve_socket
from comfyfleet.facades.comfyui._validate import output_classes
from comfyfleet.gateway import (
    ApiError,
    Caller,
    JsonLimits,
    Service,
    json_limits,
    needs,
    read_json_body,
)

Submitter = Annotated[Caller, Depends(needs(SUBMIT))]
Reader = Annotated[Caller, Depends(needs(READ))]
_SMALL_BODY = JsonLimits(max_bytes=1024 * 1024, max_depth=8, max_items=100_000)


@dataclass
class ComfyApi:
    """What the ComfyUI API works with, built by the composition root."""

    service: Service
    hub: SocketHub
    folders: _files.Folders
    assets: AssetStore | None = None
    max_upload_bytes: int = 100 * 1024 * 1024

    def file_inputs(self) -> frozenset[tuple[str, str]]:
        loaders = {(c, i) for c, inputs in self.service.loaders.items() for i in inputs}
        media = {(c, i) for c, inputs in LOADER_INPUTS.items() for i in inputs}
        return frozenset(loaders | media)


Route = tuple[str, Callable[..., Any], str]


def comfyui_router(api: ComfyApi) -> APIRouter:
    router = APIRouter(tags=["ComfyUI API"])
    flags = _info.features(api.max_upload_bytes)

    async def socket(websocket: WebSocket) -> None:
        await serve_socket(websocket, api.hub, api.service.closing, flags)

    routes = [*_prompt_routes(api), *_control_routes(api), *_info_routes(api, flags)]
    for prefix in ("", "/api"):
        for path, endpoint, method in routes:
            router.add_api_route(
                prefix + path,
                endpoint,
                methods=[method],
                include_in_schema=False,  # ComfyUI's contract, not our document's
                summary=f"ComfyUI's {method} {path}, for the whole fleet",
            )
        router.add_api_websocket_route(prefix + "/ws", socket)
    _jobs_routes(router, api)
    for route in router.routes:
        if isinstance(route, APIRoute):
            route.include_in_schema = False
    return router


async def _outputs(service: Service) -> frozenset[str]:
    return output_classes(await _info.object_info(service))


def _prompt_routes(api: ComfyApi) -> list[Route]:
    service, store, hub = api.service, api.service.store, api.hub
    file_inputs = api.file_inputs()

    async def post_prompt(request: Request, caller: Submitter) -> Response:
        body = await read_json_body(request, json_limits(service.settings), any_type=True)
        info = await _info.object_info(service)
        taken = await take_prompt(service, body, caller, info=info, file_inputs=file_inputs)
        if isinstance(taken, JSONResponse):
            return taken
        hub.expect(taken)
        return JSONResponse(prompt_answer(taken))

    async def get_prompt(caller: Reader) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": await hub.queue_remaining()}}

    async def get_queue(caller: Reader) -> dict[str, Any]:
        return await _lists.queue_view(store, caller, await _outputs(service))

    async def get_history(
        caller: Reader,
        max_items: Annotated[int | None, Query(ge=1)] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        outputs = await _outputs(service)
        return await _lists.history_view(store, caller, outputs, max_items, offset)

    async def get_history_item(prompt_id: str, caller: Reader) -> Any:
        job = await _lists.find(store, prompt_id, caller)
        if job is None or not job.terminal:
            return {}
        return {job.id: history_entry(job, await _outputs(service))}

    return [
        ("/prompt", post_prompt, "POST"),
        ("/prompt", get_prompt, "GET"),
        ("/queue", get_queue, "GET"),
        ("/history", get_history, "GET"),
        ("/history/{prompt_id}", get_history_item, "GET"),
    ]


def _control_routes(api: ComfyApi) -> list[Route]:
    service, store = api.service, api.service.store

    async def post_queue(request: Request, caller: Submitter) -> Response:
        await _lists.delete_queued(store, caller, await _small_body(request))
        return Response(status_code=200)

    async def post_history(request: Request, caller: Submitter) -> Response:
        await _lists.delete_history(store, caller, await _small_body(request))
        return Response(status_code=200)

    async def post_interrupt(request: Request, caller: Submitter) -> Response:
        await _lists.interrupt(store, caller, await _small_body(request))
        return Response(status_code=200)

    async def post_free(request: Request, caller: Submitter) -> Response:
        await _info.free(await service.fleet(), await _small_body(request))
        return Response(status_code=200)

    async def upload_image(request: Request, caller: Submitter) -> Any:
        return await _files.upload_image(request, _assets(api), caller, api.max_upload_bytes)

    async def upload_mask(request: Request, caller: Submitter) -> Any:
        assets = _assets(api)
        return await _files.upload_mask(
            request, service, api.folders, assets, caller, api.max_upload_bytes
        )

    return [
        ("/queue", post_queue, "POST"),
        ("/history", post_history, "POST"),
        ("/interrupt", post_interrupt, "POST"),
        ("/free", post_free, "POST"),
        ("/upload/image", upload_image, "POST"),
        ("/upload/mask", upload_mask, "POST"),
    ]


def _info_routes(api: ComfyApi, flags: dict[str, Any]) -> list[Route]:
    service = api.service

    async def get_view(
        caller: Reader,
        filename: str,
        subfolder: str = "",
        type: str = "output",
    ) -> Response:
        return await _files.view(
            service, api.folders, api.assets, caller, filename, subfolder, type
        )

    async def get_object_info(caller: Reader) -> dict[str, Any]:
        return await _info.object_info(service)

    async def get_node_info(node_class: str, caller: Reader) -> Any:
        info = await _info.object_info(service)
        return {node_class: info[node_class]} if node_class in info else {}

    async def get_system_stats(caller: Reader) -> dict[str, Any]:
        return _info.system_stats(await service.fleet())

    async def get_embeddings(caller: Reader) -> list[str]:
        return _info.embeddings(await service.fleet())

    async def get_models(caller: Reader) -> list[str]:
        return list(_info.model_files(await service.fleet()))

    async def get_folder(folder: str, caller: Reader) -> list[str]:
        return _info.folder_files(await service.fleet(), folder)

    async def get_features(caller: Reader) -> dict[str, Any]:
        return flags

    return [
        ("/view", get_view, "GET"),
        ("/object_info", get_object_info, "GET"),
        ("/object_info/{node_class}", get_node_info, "GET"),
        ("/system_stats", get_system_stats, "GET"),
        ("/embeddings", get_embeddings, "GET"),
        ("/models", get_models, "GET"),
        ("/models/{folder}", get_folder, "GET"),
        ("/features", get_features, "GET"),
    ]


def _jobs_routes(router: APIRouter, api: ComfyApi) -> None:
    """The jobs API of current ComfyUI (`/api/jobs`), for clients written for it."""
    service, store = api.service, api.service.store

    async def outputs() -> frozenset[str]:
        return await _outputs(service)

    statuses = {name: status for status, name in _lists.JOB_STATES.items()}

    @router.get("/api/jobs", tags=["ComfyUI API"], summary="ComfyUI's jobs list, fleet-wide")
    async def list_jobs(
        caller: Reader,
        status: str | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: Annotated[int | None, Query(ge=1)] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        wanted = [s.strip() for s in (status or "").split(",") if s.strip()]
        unknown = [s for s in wanted if s not in statuses]
        if unknown:
            message = f"Invalid status value(s): {', '.join(unknown)}"
            raise ApiError(400, "invalid_status", message, {"allowed": sorted(statuses)})
        if sort_by not in ("created_at", "execution_duration") or sort_order not in ("asc", "desc"):
            raise ApiError(
                400,
                "invalid_sort",
                "sort_by: created_at | execution_duration; sort_order: asc | desc",
            )
        chosen = [statuses[s] for s in wanted] or list(statuses.values())
        found = []
        for each in chosen:
            found.extend(await _lists.visible(store, caller, each))
        kinds = await outputs()
        jobs = [_lists.job_summary(job, full=False, outputs=kinds) for job in found]
        jobs = _lists.sort_jobs(jobs, sort_by, sort_order)
        page = jobs[offset:] if limit is None else jobs[offset : offset + limit]
        pagination = {
            "offset": offset,
            "limit": limit,
            "total": len(jobs),
            "has_more": offset + len(page) < len(jobs),
        }
        return {"jobs": page, "pagination": pagination}

    @router.get("/api/jobs/{job_id}", tags=["ComfyUI API"], summary="One job, ComfyUI's shape")
    async def read_job(job_id: str, caller: Reader) -> dict[str, Any]:
        job = await _lists.find(store, job_id, caller)
        if job is None:
            raise ApiError(404, "job_not_found", "Job not found")
        return _lists.job_summary(job, full=True, outputs=await outputs())

    @router.post("/api/jobs/{job_id}/cancel", tags=["ComfyUI API"], summary="Cancel (idempotent)")
    async def cancel_job(job_id: str, caller: Submitter) -> dict[str, bool]:
        """As current ComfyUI answers: `cancelled` says whether a waiting or running job was
        cancelled; a finished or unknown id is a no-op, not an error."""
        return {"cancelled": await _lists.cancel_jobs(store, caller, [job_id])}

    @router.post("/api/jobs/cancel", tags=["ComfyUI API"], summary="Cancel several (idempotent)")
    async def cancel_jobs(request: Request, caller: Submitter) -> dict[str, bool]:
        """`{"job_ids": [...]}`; every id that waits or runs is cancelled, the others are
        no-ops. Ids are any strings (fleet job ids are not all UUIDs, as ComfyUI's are)."""
        ids = (await _small_body(request)).get("job_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "invalid_request", "job_ids must be a list of job id strings")
        return {"cancelled": await _lists.cancel_jobs(store, caller, ids)}


async def _small_body(request: Request) -> dict[str, Any]:
    """An optional small JSON object (ComfyUI's control routes accept an empty body)."""
    if not (await request.body()).strip():
        return {}
    body = await read_json_body(request, _SMALL_BODY, any_type=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    return body


def _assets(api: ComfyApi) -> AssetStore:
    if api.assets is None:
        raise ApiError(503, "uploads_unavailable", "this gateway has no input store")
    return api.assets
