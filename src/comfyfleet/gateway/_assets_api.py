"""The `/v1/assets` routes: upload input media once, then name it as `asset:<id>` in graphs.

`POST /v1/assets` takes multipart/form-data (the `file` field) or a raw body whose Content-Type is
a media type (image/*, video/*, audio/*, application/octet-stream). The bytes stream into the
asset store, hashed on the way and never whole in memory; the stored type comes from the bytes,
not from the declared type or file name. The upload limit is checked on Content-Length first and
then counted, answering 413 `upload_too_large`. 201 for a new asset, 200 when the same bytes were
there already. Also here: how media errors of a submitted graph become API errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from comfyfleet.assets import (
    ASSET_NOT_FOUND,
    BAD_BASE64,
    BAD_INPUT_PATH,
    EMPTY_INPUT,
    INPUT_TOO_LARGE,
    URL_NOT_FOUND,
    URL_REFUSED,
    URL_UNREACHABLE,
    Asset,
    AssetNotFound,
    AssetStore,
    MediaInputError,
    MediaResolver,
    Rewrite,
    resolve_media,
)
from comfyfleet.auth import READ, SUBMIT
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._tenancy import Caller, needs, remove_asset, visible_asset
from comfyfleet.gateway._uploads import receive_upload

_API_ERRORS = {
    URL_REFUSED: (422, "input_refused"),
    URL_UNREACHABLE: (422, "input_unreachable"),
    URL_NOT_FOUND: (422, "input_not_found"),
    INPUT_TOO_LARGE: (422, "input_too_large"),
    ASSET_NOT_FOUND: (422, "asset_not_found"),
    BAD_BASE64: (400, "bad_base64"),
    BAD_INPUT_PATH: (400, "bad_input_path"),
    EMPTY_INPUT: (400, "empty_input"),
}


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_UPLOAD_BODY = {
    "required": True,
    "description": "multipart/form-data with a 'file' field, or the raw file with its media type "
    "(image/*, video/*, audio/*, application/octet-stream); the stored type is sniffed",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "application/octet-stream": _BINARY,
    },
}


def media_api_error(exc: MediaInputError) -> ApiError:
    """The API answer for a media error of a submitted graph (400 malformed, 422 unusable).

    `details` keeps the node, class and input, plus `reason` (the media error code) and `hint`.
    """
    status, code = _API_ERRORS.get(exc.code, (422, exc.code))
    return ApiError(
        status, code, exc.message, {**exc.details(), "reason": exc.code, "hint": exc.hint}
    )


async def resolve_job_media(
    workflow: Mapping[str, Any], resolver: MediaResolver
) -> tuple[dict[str, Any], list[Rewrite]]:
    """`resolve_media` for the submit route: media errors become :class:`ApiError`."""
    try:
        return await resolve_media(workflow, resolver)
    except MediaInputError as exc:
        raise media_api_error(exc) from exc


def assets_router(store: AssetStore, *, max_upload_bytes: int | None = None) -> APIRouter:
    """The `/v1/assets` routes over `store` (limit: `max_upload_bytes`, else the store's)."""
    limit = store.max_bytes if max_upload_bytes is None else max_upload_bytes
    router = APIRouter(tags=["assets"])

    def get_asset(asset_id: str, caller: Caller) -> Asset:
        try:
            return visible_asset(store, asset_id, caller)
        except AssetNotFound as exc:
            raise ApiError(404, "asset_not_found", exc.message, {"hint": exc.hint}) from exc

    @router.post(
        "/v1/assets",
        status_code=201,
        summary="Upload an input file (201 new, 200 already stored)",
        openapi_extra={"requestBody": _UPLOAD_BODY},
    )
    async def upload(
        request: Request,
        caller: Annotated[Caller, Depends(needs(SUBMIT))],
        filename: str | None = None,
    ) -> JSONResponse:
        upload = await receive_upload(request, store, limit, owner=caller.owner, filename=filename)
        asset, created = upload.asset, upload.created
        return JSONResponse(asset.to_dict(), status_code=201 if created else 200)

    @router.get("/v1/assets/{asset_id}", summary="An asset's metadata")
    async def read(
        asset_id: str, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> dict[str, Any]:
        return get_asset(asset_id, caller).to_dict()

    @router.get("/v1/assets/{asset_id}/content", summary="An asset's bytes")
    async def content(
        asset_id: str, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> FileResponse:
        asset = get_asset(asset_id, caller)
        return FileResponse(
            store.folder / asset.file_name,
            media_type=asset.content_type,
            headers={"X-Content-Type-Options": "nosniff"},
        )

    @router.delete("/v1/assets/{asset_id}", status_code=204, summary="Delete an asset")
    async def delete(asset_id: str, caller: Annotated[Caller, Depends(needs(SUBMIT))]) -> Response:
        get_asset(asset_id, caller)
        try:
            remove_asset(store, asset_id, caller)
        except AssetNotFound:
            pass  # deleted meanwhile: the outcome the client asked for
        return Response(status_code=204)

    return router
