"""The `/v1/assets` routes: upload input media once, then name it as `asset:<id>` in graphs.

`POST /v1/assets` takes multipart/form-data (the `file` field) or a raw body whose Content-Type is
a media type (image/*, video/*, audio/*, application/octet-stream). The bytes stream into the
asset store, hashed on the way and never whole in memory; the stored type comes from the bytes,
not from the declared type or file name. The upload limit is checked on Content-Length first and
then counted, answering 413 `upload_too_large`. 201 for a new asset, 200 when the same bytes were
there already. Also here: how media errors of a submitted graph become API errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

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
_MEDIA_PREFIXES = ("image/", "video/", "audio/", "application/octet-stream")
_MAX_BOUNDARY = 70
_MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart body may carry beyond the file limit (boundaries, part headers, fields)."""


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


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"the upload is larger than the limit of {limit} bytes",
        {"limit": limit},
    )


class _MultipartFile:
    """Streams the data of the `file` part out of a multipart body as it arrives."""

    def __init__(self, source: AsyncIterator[bytes], boundary: bytes, limit: int) -> None:
        self.filename: str | None = None
        self._source = source
        self._limit = limit
        self._read = 0
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._in_file = self._found = self._done = False
        self._pending: list[bytes] = []
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._headers.clear,
                "on_header_field": lambda d, s, e: self._add_header(field=d[s:e]),
                "on_header_value": lambda d, s, e: self._add_header(value=d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    async def start(self) -> None:
        """Read until the `file` part's headers are in (so its file name is known)."""
        while not self._found:
            await self._feed_next()

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            pending, self._pending = self._pending, []
            for piece in pending:
                yield piece
            if self._done:
                return
            await self._feed_next()

    async def _feed_next(self) -> None:
        chunk = await anext(self._source, None)
        if chunk is None:
            if not self._found:
                raise ApiError(422, "invalid_request", "the multipart body has no 'file' field")
            raise ApiError(400, "incomplete_upload", "the upload ended before the file did")
        self._read += len(chunk)
        if self._read > self._limit:
            raise _too_large(self._limit - _MULTIPART_SLACK)
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise ApiError(
                400, "invalid_multipart", f"the multipart body is malformed: {exc}"
            ) from exc

    def _add_header(self, *, field: bytes = b"", value: bytes = b"") -> None:
        self._field += field
        self._value += value

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _kind, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") == b"file" and not self._found:
            self._found = self._in_file = True
            name = options.get(b"filename")
            self.filename = name.decode("utf-8", "replace") if name else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._done = True


def _boundary(options: Mapping[bytes, bytes]) -> bytes:
    """The multipart boundary: 1-70 characters (RFC 2046), which the parser needs it to be."""
    boundary = options.get(b"boundary", b"")
    if not 0 < len(boundary) <= _MAX_BOUNDARY:
        raise ApiError(
            400,
            "invalid_multipart",
            f"the multipart Content-Type needs a boundary of 1-{_MAX_BOUNDARY} characters "
            f"(this one has {len(boundary)})",
        )
    return boundary


def _check_length(request: Request, limit: int, shown: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(shown)


async def _store_upload(
    request: Request, store: AssetStore, limit: int, filename: str | None, owner: str | None
) -> tuple[Asset, bool]:
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    media_type = kind.decode("latin-1").lower()
    async with aclosing(request.stream()) as source:
        if media_type == "multipart/form-data":
            boundary = _boundary(options)
            _check_length(request, limit + _MULTIPART_SLACK, limit)
            upload = _MultipartFile(source, boundary, limit + _MULTIPART_SLACK)
            await upload.start()
            chunks = upload.chunks()
            return await store.add_stream(chunks, limit, filename=upload.filename, owner=owner)
        if media_type.startswith(_MEDIA_PREFIXES):
            _check_length(request, limit, limit)
            return await store.add_stream(source, limit, filename=filename, owner=owner)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"cannot upload a body of type {media_type or 'none'!r}",
        {
            "hint": "send multipart/form-data with a 'file' field, or the raw file with its "
            "image/*, video/*, audio/* or application/octet-stream Content-Type"
        },
    )


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
        try:
            asset, created = await _store_upload(request, store, limit, filename, caller.owner)
        except MediaInputError as exc:
            if exc.code == INPUT_TOO_LARGE:
                raise _too_large(limit) from exc
            if exc.code == EMPTY_INPUT:
                raise ApiError(400, "empty_upload", "the uploaded file is empty") from exc
            raise media_api_error(exc) from exc
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
