"""Files through the ComfyUI API: `/view` and `/upload/image`, `/upload/mask`.

`/view?filename&subfolder&type` reads:
- `output`: the workspace's output folder, where every instance writes (each job under a folder
  named after it); a file that is not there (the job stored its outputs elsewhere: S3, Azure) is
  read from where the job's outputs went;
- `input`: the shared input folder, uploads included;
- `temp`: the instances' temp folders (previews of `PreviewImage`).
Each job writes its outputs under a folder named after it; a client that asks for a file name
without its `subfolder` gets the newest recent job's file of that name.
A name with `..`, an absolute path or an unknown type is refused (400). With API keys on, a key
reads the outputs of its own jobs and the inputs it uploaded (admin keys: everything).

Uploads become content-addressed assets (`comfyfleet.assets`): the answer names the file as
`{"name": "<sha256>.<ext>", "subfolder": "comfyfleet-assets", "type": "input"}`, which every
instance's `LoadImage` reads (the input folder is shared, and attached servers get it copied
before a job runs). The client's file name, `overwrite` and `subfolder` do not choose the path:
two clients uploading `image.png` never overwrite each other's.
"""

from __future__ import annotations

import io
import json
import mimetypes
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from comfyfleet.assets import ASSETS_FOLDER, AssetNotFound, AssetStore
from comfyfleet.gateway import (
    JOB_ID,
    ApiError,
    Caller,
    Service,
    receive_upload,
    visible_asset,
    visible_job,
)
from comfyfleet.jobs import JobNotFound

TYPES = ("output", "input", "temp")
_SMALL_FILE = 512 * 1024
_NAME_LOOKUP = 200
"""How many recent jobs a `/view` by file name alone looks through."""


@dataclass(frozen=True)
class Folders:
    """Where `/view` looks: the output and input folders, and the instances' temp folders."""

    output: Path
    input: Path
    temp: Callable[[], Sequence[Path]]


def _parts(value: str, what: str) -> tuple[str, ...]:
    if "\0" in value or "\\" in value or value.startswith("/") or ":" in value[:2]:
        raise ApiError(400, "invalid_path", f"{what} must be a relative path")
    parts = tuple(p for p in PurePosixPath(value).parts if p not in ("", "."))
    if ".." in parts:
        raise ApiError(400, "invalid_path", f"{what} may not contain '..'")
    return parts


def _inside(base: Path, parts: tuple[str, ...]) -> Path | None:
    path = base.joinpath(*parts)
    try:
        if not path.resolve().is_relative_to(base.resolve()) or not path.is_file():
            return None
    except OSError:
        return None
    return path


async def view(
    service: Service,
    folders: Folders,
    assets: AssetStore | None,
    caller: Caller,
    filename: str,
    subfolder: str,
    kind: str,
) -> Response:
    try:
        path = await find_file(service, folders, assets, caller, filename, subfolder, kind)
    except _StoredElsewhere as elsewhere:
        return await _stored_output(service, caller, elsewhere.folder, filename)
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"X-Content-Type-Options": "nosniff"}
    if path.stat().st_size <= _SMALL_FILE:
        # One read on the loop costs less than FileResponse's hop to a worker thread.
        return Response(path.read_bytes(), media_type=media, headers=headers)
    return FileResponse(path, media_type=media, headers=headers)


class _StoredElsewhere(Exception):
    """An output that is not in this machine's output folder (its job stored it away)."""

    def __init__(self, folder: tuple[str, ...]) -> None:
        self.folder = folder


async def find_file(
    service: Service,
    folders: Folders,
    assets: AssetStore | None,
    caller: Caller,
    filename: str,
    subfolder: str,
    kind: str,
) -> Path:
    """The local file `/view` names, checked (400 for a bad name or type, 404 for a file that
    is not there or not the caller's)."""
    if kind not in TYPES:
        raise ApiError(400, "invalid_type", f"type must be one of {', '.join(TYPES)}")
    name = _parts(filename, "filename")
    if len(name) != 1:
        raise ApiError(400, "invalid_path", "filename must be a file name, without folders")
    folder = _parts(subfolder, "subfolder")
    if kind == "output":
        if not folder and _inside(folders.output, name) is None:
            folder = await _job_folder_of(service, caller, filename)
        await _may_read_output(service, caller, folder)
        path = _inside(folders.output, folder + name)
        if path is None:
            raise _StoredElsewhere(folder)
    elif kind == "input":
        _may_read_input(assets, caller, folder, filename)
        path = _inside(folders.input, folder + name)
    else:
        path = next(
            (p for b in folders.temp() if (p := _inside(b, folder + name)) is not None), None
        )
    if path is None:
        raise ApiError(404, "file_not_found", f"no {kind} file '{'/'.join(folder + name)}'")
    return path


async def _job_folder_of(service: Service, caller: Caller, filename: str) -> tuple[str, ...]:
    """The folder of the newest recent job with an output of that name: for clients that ask
    `/view` for a file name alone (each job writes under a folder named after it, where a
    single ComfyUI wrote into the top of its output folder)."""
    jobs, _ = await service.store.list_jobs(limit=_NAME_LOOKUP, owner=caller.list_filter)
    for job in jobs:
        for output in job.outputs:
            if output.filename == filename and output.type == "output":
                return _parts(output.subfolder or "", "subfolder")
    return ()


async def _may_read_output(service: Service, caller: Caller, folder: tuple[str, ...]) -> None:
    if caller.sees_all:
        return
    job_id = folder[0] if folder else ""
    try:
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(job_id)
        await visible_job(service.store, job_id, caller)
    except JobNotFound as exc:
        raise ApiError(404, "file_not_found", "no such output file") from exc


def _may_read_input(
    assets: AssetStore | None, caller: Caller, folder: tuple[str, ...], filename: str
) -> None:
    if caller.sees_all:
        return
    if assets is None or folder != (ASSETS_FOLDER,):
        raise ApiError(404, "file_not_found", "no such input file")
    try:
        visible_asset(assets, filename.split(".", 1)[0], caller)
    except AssetNotFound as exc:
        raise ApiError(404, "file_not_found", "no such input file") from exc


async def _stored_output(
    service: Service, caller: Caller, folder: tuple[str, ...], filename: str
) -> Response:
    """An output the job stored away from this machine's output folder, streamed from there."""
    subfolder = "/".join(folder)
    try:
        job = await visible_job(service.store, folder[0], caller) if folder else None
    except JobNotFound:
        job = None
    urls = [
        service.storage.url_for(o.key)
        if service.storage is not None and o.key is not None
        else o.url
        for o in (job.outputs if job is not None else [])
        if o.filename == filename and (o.subfolder or "") == subfolder
    ]
    url = next(
        (u for u in urls if isinstance(u, str) and u.startswith(("http://", "https://"))), None
    )
    if url is None:
        raise ApiError(404, "file_not_found", f"no output file '{subfolder}/{filename}'")
    client = httpx.AsyncClient(timeout=60, follow_redirects=True)
    answer = await client.send(client.build_request("GET", url), stream=True)
    if answer.status_code != 200:
        await answer.aclose()
        await client.aclose()
        raise ApiError(
            502, "storage_unavailable", f"the output store answered {answer.status_code}"
        )

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_bytes():
                yield chunk
        finally:
            await answer.aclose()
            await client.aclose()

    media = answer.headers.get("content-type") or mimetypes.guess_type(filename)[0]
    return StreamingResponse(body(), media_type=media or "application/octet-stream")


def upload_answer(file_name: str) -> dict[str, str]:
    return {"name": file_name, "subfolder": ASSETS_FOLDER, "type": "input"}


async def upload_image(
    request: Request, assets: AssetStore, caller: Caller, limit: int
) -> dict[str, str]:
    upload = await receive_upload(request, assets, limit, owner=caller.owner, field="image")
    return upload_answer(upload.asset.file_name)


async def upload_mask(
    request: Request,
    service: Service,
    folders: Folders,
    assets: AssetStore,
    caller: Caller,
    limit: int,
) -> dict[str, str]:
    """ComfyUI's mask upload: the uploaded mask's alpha put into the original image (named by
    `original_ref`), stored as a new image. Needs Pillow (`comfyfleet[images]`)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ApiError(
            501, "pillow_missing", "mask uploads need Pillow: pip install 'comfyfleet[images]'"
        ) from exc
    upload = await receive_upload(request, assets, limit, owner=caller.owner, field="image")
    ref = _original_ref(upload.fields.get("original_ref"))
    try:
        original = await find_file(
            service,
            folders,
            assets,
            caller,
            str(ref.get("filename", "")),
            str(ref.get("subfolder") or ""),
            str(ref.get("type") or "input"),
        )
    except _StoredElsewhere as exc:
        raise ApiError(400, "invalid_original_ref", "original_ref names no file here") from exc
    mask_path = assets.folder / upload.asset.file_name
    with Image.open(original) as base, Image.open(mask_path) as mask:
        merged = base.convert("RGBA")
        alpha = mask.convert("RGBA").getchannel("A").resize(merged.size)
        merged.putalpha(alpha)
        out = io.BytesIO()
        merged.save(out, format="PNG")
    asset, _created = await assets.add_bytes(out.getvalue(), owner=caller.owner)
    return upload_answer(asset.file_name)


def _original_ref(value: str | None) -> dict[str, Any]:
    try:
        ref = json.loads(value or "")
    except ValueError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise ApiError(
            400, "invalid_original_ref", "original_ref must be JSON naming the original file"
        )
    return ref
