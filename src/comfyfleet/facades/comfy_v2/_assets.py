"""The asset routes of Comfy API v2, over the fleet's content-addressed `AssetStore`.

    POST   /api/v2/assets                 multipart upload (201 new, 200 already had: dedup)
    POST   /api/v2/assets/from-hash       `{"hash"}`: the caller's asset with those bytes, or 404
    POST   /api/v2/assets/from-path       `{"path"}`: a file on the server's disk (see `_from_path`)
    HEAD   /api/v2/assets/by-hash/{hash}  200 when the caller has those bytes, else 404
    GET    /api/v2/assets/{id}            an upload's or a job output's `Asset`
    GET    /api/v2/assets/{id}/content    the bytes, Range-capable (206)
    DELETE /api/v2/assets/{id}            the caller gives the upload up (204)

An upload's id is the store's own (the SHA-256 of its bytes), so the same bytes are one asset, as
in `/v1/assets`, and ownership per API key is the store's: another key's asset answers exactly as
one that does not exist, and a probe by hash never tells whether someone else has the bytes.
`hash` is the contract's `blake3:<hex>` (see `_hashes`); `sha256:<hex>` is accepted wherever a
hash is taken. A declared `expected_hash` that the bytes do not match is `409 hash_mismatch`, and
an upload that was new to the caller is given up again. Job outputs are assets too (id
`<job>:<index>`, see `_views`): read-only, and kept as long as their job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from comfyfleet.assets import (
    EMPTY_INPUT,
    INPUT_TOO_LARGE,
    Asset,
    AssetNotFound,
    AssetStore,
    MediaInputError,
)
from comfyfleet.auth import READ, SUBMIT
from comfyfleet.facades.comfy_v2._context import V2, base_url
from comfyfleet.facades.comfy_v2._errors import invalid, not_found, translated
from comfyfleet.facades.comfy_v2._hashes import blake3_of_file, new_blake3, parse_hash
from comfyfleet.facades.comfy_v2._multipart import UploadForm, boundary_of
from comfyfleet.facades.comfy_v2._views import iso, split_output_id, v2_output
from comfyfleet.gateway import (
    ApiError,
    Caller,
    json_limits,
    needs,
    read_json_body,
    remove_asset,
    visible_asset,
)
from comfyfleet.jobs import JobOutput, JobStatus

_SLACK = 64 * 1024
"""Bytes a multipart body may carry beyond the file limit (boundaries, headers, fields)."""
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def assets_routes(router: APIRouter, v2: V2, store: AssetStore) -> AssetRoutes:
    """Adds the routes to `router`; returns their handler, which `_from_path` builds on."""
    routes = AssetRoutes(v2, store)
    table: list[tuple[str, Callable[..., Awaitable[Any]], str, int, str]] = [
        ("/api/v2/assets", routes.upload, "POST", 201, "Upload an asset (Comfy API v2)"),
        (
            "/api/v2/assets/from-hash",
            routes.from_hash,
            "POST",
            200,
            "The caller's asset with these bytes (no upload)",
        ),
        (
            "/api/v2/assets/by-hash/{digest}",
            routes.by_hash,
            "HEAD",
            200,
            "Whether the caller has these bytes",
        ),
        ("/api/v2/assets/{asset_id}", routes.read, "GET", 200, "An asset (an upload or output)"),
        (
            "/api/v2/assets/{asset_id}/content",
            routes.content,
            "GET",
            200,
            "An asset's bytes (Range-capable)",
        ),
        ("/api/v2/assets/{asset_id}", routes.delete, "DELETE", 204, "Give an uploaded asset up"),
    ]
    for path, handler, method, status, summary in table:
        router.add_api_route(
            path, translated(handler), methods=[method], status_code=status, summary=summary
        )
    return routes


class AssetRoutes:
    def __init__(self, v2: V2, store: AssetStore) -> None:
        self.v2 = v2
        self.store = store

    # --- uploads ------------------------------------------------------------------------------

    async def upload(
        self, request: Request, caller: Annotated[Caller, Depends(needs(SUBMIT))]
    ) -> JSONResponse:
        limit = self.store.max_bytes
        boundary = boundary_of(request.headers.get("content-type", ""))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + _SLACK:
            raise _too_large(limit)
        hasher = new_blake3()
        async with aclosing(request.stream()) as source:
            form = UploadForm(source, boundary, limit + _SLACK)
            await form.start()

            async def chunks() -> AsyncIterator[bytes]:
                async for chunk in form.file_chunks():
                    if hasher is not None:
                        hasher.update(chunk)
                    yield chunk

            name = form.field("file_path") or form.filename
            try:
                asset, created = await self.store.add_stream(
                    chunks(), limit, filename=name, owner=caller.owner
                )
            except MediaInputError as exc:
                if exc.code == INPUT_TOO_LARGE:
                    raise _too_large(limit) from exc
                if exc.code == EMPTY_INPUT:
                    raise invalid("the uploaded file is empty") from exc
                raise invalid(exc.message) from exc
            await form.finish()
        blake3_hex = hasher.hexdigest() if hasher is not None else None
        if blake3_hex is not None:
            await asyncio.to_thread(self.v2.hashes.add, blake3_hex, asset.id)
        expected = form.field("expected_hash")
        if expected and not _matches(expected, asset.id, blake3_hex):
            if created:
                self._give_up(asset, caller)
            raise ApiError(
                409,
                "hash_mismatch",
                "the declared expected_hash does not match the received bytes",
                {"expected_hash": expected[:80]},
            )
        body = self.asset_json(asset, base_url(request), blake3_hex, created_new=created)
        return JSONResponse(body, status_code=201 if created else 200)

    def _give_up(self, asset: Asset, caller: Caller) -> None:
        try:
            if caller.owner is None:
                self.store.delete(asset.id)  # new bytes: nobody else has them
            else:
                self.store.release(asset.id, caller.owner)
        except AssetNotFound:
            pass

    async def from_hash(
        self, request: Request, caller: Annotated[Caller, Depends(needs(SUBMIT))]
    ) -> JSONResponse:
        body = await read_json_body(request, json_limits(self.v2.service.settings))
        digest = body.get("hash")
        if not isinstance(digest, str) or parse_hash(digest) is None:
            raise invalid("'hash' must be blake3:<64 hex> or sha256:<64 hex>", field="hash")
        asset = self._by_hash(digest, caller)
        if asset is None:  # a miss and "not yours" are the same answer
            raise ApiError(404, "blob_not_found", "no stored bytes the caller may use")
        answer = self.asset_json(asset, base_url(request), await self.blake3(asset))
        return JSONResponse(answer | {"created_new": False}, status_code=200)

    async def by_hash(
        self, digest: str, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> Response:
        return Response(status_code=200 if self._by_hash(digest, caller) else 404)

    def _by_hash(self, digest: str, caller: Caller) -> Asset | None:
        parsed = parse_hash(digest)
        if parsed is None:
            return None
        algorithm, hex_digest = parsed
        sha256 = hex_digest if algorithm == "sha256" else self.v2.hashes.sha256_of(hex_digest)
        if sha256 is None:
            return None
        try:
            return visible_asset(self.store, sha256, caller)
        except AssetNotFound:
            return None

    # --- reading ------------------------------------------------------------------------------

    async def read(
        self, asset_id: str, request: Request, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> dict[str, Any]:
        base = base_url(request)
        output = await self._output(asset_id, caller, base)
        if output is not None:
            return output[1]
        asset = self._upload(asset_id, caller)
        return self.asset_json(asset, base, await self.blake3(asset))

    async def content(
        self, asset_id: str, request: Request, caller: Annotated[Caller, Depends(needs(READ))]
    ) -> Response:
        output = await self._output(asset_id, caller, base_url(request))
        if output is None:
            asset = self._upload(asset_id, caller)
            stored = self.store.folder / asset.file_name
            return FileResponse(stored, media_type=asset.content_type, headers=_NOSNIFF)
        item, shown = output
        text = item.text
        if text is not None:
            return Response(text.encode(), media_type=shown["content_type"], headers=_NOSNIFF)
        file = self._output_file(split_output_id(asset_id), item)
        if file is not None:
            return FileResponse(file, media_type=shown["content_type"], headers=_NOSNIFF)
        url = item.url
        if url is not None and url.startswith(("https://", "http://")):
            return RedirectResponse(url, status_code=302)  # kept in the job's object storage
        raise ApiError(
            404,
            "output_unavailable",
            "the output's bytes are no longer on this server; retrying cannot help",
        )

    async def delete(
        self, asset_id: str, caller: Annotated[Caller, Depends(needs(SUBMIT))]
    ) -> Response:
        if split_output_id(asset_id) is not None:
            raise invalid("a job's outputs are kept with the job and cannot be deleted alone")
        self._upload(asset_id, caller)
        try:
            remove_asset(self.store, asset_id, caller)
        except AssetNotFound:
            pass  # deleted meanwhile: the outcome asked for
        return Response(status_code=204)

    def _upload(self, asset_id: str, caller: Caller) -> Asset:
        try:
            return visible_asset(self.store, asset_id, caller)
        except AssetNotFound as exc:
            raise not_found("asset", asset_id) from exc

    async def _output(
        self, asset_id: str, caller: Caller, base: str
    ) -> tuple[JobOutput, dict[str, Any]] | None:
        """(the stored output, its `Asset` view) when `asset_id` names a job output; None when it
        names no output (it may name an upload); 404 for an output that does not exist."""
        parts = split_output_id(asset_id)
        if parts is None:
            return None
        job = await self.v2.job(parts[0], caller)
        index = parts[1]
        if job.status != JobStatus.SUCCEEDED or index >= len(job.outputs):
            raise not_found("asset", asset_id)
        item = job.outputs[index]
        now = time.time()
        view = v2_output(job, index, item, base, now, self.v2.retention_s)
        shown = {
            "id": view["id"],
            "hash": None,
            "size_bytes": view["size_bytes"],
            "content_type": view["content_type"],
            "file_path": view["name"],
            "created_at": iso(job.finished_at),
            "url": view["url"],
            "url_expires_at": view["url_expires_at"],
            "expires_at": None,
            "job_id": job.id,
        }
        return item, shown

    def _output_file(self, parts: tuple[str, int] | None, item: JobOutput) -> Path | None:
        relative = item.path
        if parts is None or relative is None:
            return None
        pieces = PurePosixPath(relative).parts
        if not pieces or ".." in pieces or relative.startswith("/"):
            return None
        file = self.v2.service.output_dir / parts[0] / Path(*pieces)
        return file if file.is_file() else None

    async def blake3(self, asset: Asset) -> str | None:
        """The asset's BLAKE3, from the index, else hashed now (once) from its file."""
        known = self.v2.hashes.blake3_of(asset.id)
        if known is not None:
            return known
        computed = await asyncio.to_thread(blake3_of_file, self.store.folder / asset.file_name)
        if computed is not None:
            await asyncio.to_thread(self.v2.hashes.add, computed, asset.id)
        return computed

    def asset_json(
        self, asset: Asset, base: str, blake3_hex: str | None, *, created_new: bool | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": asset.id,
            "hash": None if blake3_hex is None else f"blake3:{blake3_hex}",
            "size_bytes": asset.size,
            "content_type": asset.content_type,
            "file_path": asset.filename,
            "created_at": iso(asset.created_at),
            "url": f"{base}/api/v2/assets/{asset.id}/content",
            "url_expires_at": iso(time.time() + self.v2.retention_s),
            "expires_at": None,
            "job_id": None,
        }
        if created_new is not None:
            body["created_new"] = created_new
        return body


def _matches(expected: str, sha256_hex: str, blake3_hex: str | None) -> bool:
    """Whether the declared hash is the bytes'. A BLAKE3 this server cannot compute (no
    `blake3` package) cannot be checked and is taken as it is; it is not indexed either."""
    parsed = parse_hash(expected)
    if parsed is None:
        return False
    algorithm, digest = parsed
    if algorithm == "sha256":
        return digest == sha256_hex
    return blake3_hex is None or digest == blake3_hex


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the upload exceeds {limit} bytes", {"limit": limit})
