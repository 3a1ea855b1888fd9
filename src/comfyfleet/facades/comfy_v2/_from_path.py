"""`POST /api/v2/assets/from-path`: a file already on the gateway's disk becomes an asset.

The contract's route registers a host file that the server shares with ComfyUI, so that a
pipeline which wrote an image into the input or output folder can hand it to a job without
uploading it again. Here that means a file under the fleet's input folder or its output folder
(resolved with every symlink followed, so a link cannot lead out of them). The bytes are copied
into the content-addressed asset store: an asset must not change under a job that uses it, and
a file in those folders may be rewritten or pruned later. Same bytes, same asset (200 with
`created_new: false`).

A host path reaches the server's disk, so the route needs the `admin` scope, and every refusal
names only what the caller sent, never the server's folders.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from comfyfleet.assets import MediaInputError
from comfyfleet.auth import ADMIN
from comfyfleet.facades.comfy_v2._assets import AssetRoutes
from comfyfleet.facades.comfy_v2._context import base_url
from comfyfleet.facades.comfy_v2._errors import invalid, translated
from comfyfleet.facades.comfy_v2._hashes import Hasher, new_blake3
from comfyfleet.gateway import ApiError, Caller, json_limits, needs, read_json_body

_CHUNK = 1 << 20
ALLOWED = "the fleet's input or output folder"


def from_path_route(router: APIRouter, assets: AssetRoutes) -> None:
    """Adds the route; the roots are the asset store's input folder and the output folder."""
    handler = FromPath(assets, (assets.store.input_dir, assets.v2.service.output_dir))
    router.add_api_route(
        "/api/v2/assets/from-path",
        translated(handler.register),
        methods=["POST"],
        status_code=201,
        summary="A file in the fleet's input or output folder, as an asset (admin)",
    )


class FromPath:
    """The route's handler over the asset routes (their store, hash index and answer shape)."""

    def __init__(self, assets: AssetRoutes, roots: tuple[Path, ...]) -> None:
        self.assets = assets
        self.roots = roots

    async def register(
        self, request: Request, caller: Annotated[Caller, Depends(needs(ADMIN))]
    ) -> JSONResponse:
        body = await read_json_body(request, json_limits(self.assets.v2.service.settings))
        raw = body.get("path")
        if not isinstance(raw, str) or not raw or "\0" in raw:
            raise invalid("'path' must be the absolute path of a file", field="path")
        name = body.get("file_path")
        if name is not None and not isinstance(name, str):
            raise invalid("'file_path' must be a string when given", field="file_path")
        source = await asyncio.to_thread(self._source, raw)
        store = self.assets.store
        size = source.stat().st_size
        if size > store.max_bytes:
            raise ApiError(
                413,
                "payload_too_large",
                f"the file exceeds {store.max_bytes} bytes",
                {"limit": store.max_bytes},
            )
        hasher = new_blake3()
        try:
            asset, created = await store.add_stream(
                _read(source, hasher), filename=name or source.name, owner=caller.owner
            )
        except MediaInputError as exc:
            raise invalid(exc.message, field="path") from exc
        blake3_hex = hasher.hexdigest() if hasher is not None else None
        if blake3_hex is not None:
            await asyncio.to_thread(self.assets.v2.hashes.add, blake3_hex, asset.id)
        answer = self.assets.asset_json(asset, base_url(request), blake3_hex, created_new=created)
        return JSONResponse(answer, status_code=201 if created else 200)

    def _source(self, raw: str) -> Path:
        """The regular file `raw` names, inside one of the roots once every link is followed."""
        given = Path(raw)
        if not given.is_absolute():
            raise invalid("'path' must be absolute", field="path")
        try:
            resolved = given.resolve()
        except (OSError, RuntimeError) as exc:  # a loop of links
            raise invalid("'path' cannot be resolved", field="path") from exc
        if not any(resolved.is_relative_to(root.resolve()) for root in self.roots):
            raise invalid(f"'path' must lie in {ALLOWED}", field="path")
        if not resolved.is_file():
            raise ApiError(404, "blob_not_found", "no regular file at that path")
        return resolved


async def _read(source: Path, hasher: Hasher | None) -> AsyncIterator[bytes]:
    """The file's bytes in chunks, each read off the event loop, fed to `hasher` on the way."""
    with source.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            if hasher is not None:
                hasher.update(chunk)
            yield chunk
