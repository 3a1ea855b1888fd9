"""Reading an `/images/edits` body: multipart/form-data with the image(s) (`image`, or
`image[]` repeated, as OpenAI's SDKs and Open WebUI send several), an optional `mask`, and
text fields.

Starlette parses the form and keeps each file in a spooled temporary file (memory up to 1 MiB,
then disk); the body as a whole is limited here as it arrives, since a chunked body declares
no length up front: at most two uploads' worth (`assets.max_upload_bytes` each: an image and
its mask) plus room for the text fields. Each file goes to the asset store under the caller's
name, and the job names it as `asset:<id>`, as any `/v1` job names an upload.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message, Receive

from comfyfleet.assets import INPUT_TOO_LARGE, AssetStore, MediaInputError
from comfyfleet.facades.openai._errors import invalid
from comfyfleet.gateway import ApiError

IMAGE_FIELDS = ("image", "image[]")
MASK_FIELD = "mask"
MAX_FILES = 17
"""OpenAI takes up to 16 images and a mask."""
MAX_TEXT_FIELDS = 64
_FIELD_SLACK = 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class EditForm:
    fields: dict[str, str]
    """The text fields (a repeated one: its last value)."""
    images: list[UploadFile]
    mask: UploadFile | None
    form: FormData

    async def close(self) -> None:
        """Remove the spooled files."""
        await self.form.close()


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def limited_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return limited_receive


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"the request body is larger than the limit of {limit} bytes",
        {"param": "image", "limit": limit},
    )


async def read_edit_form(request: Request, max_upload_bytes: int) -> EditForm:
    """The form, or a 4xx naming what is wrong with it."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise ApiError(
            415 if kind else 400,
            "invalid_content_type",
            "/images/edits takes multipart/form-data with the image file(s), as OpenAI's does",
            {"param": None},
        )
    limit = 2 * max_upload_bytes + _FIELD_SLACK
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    bounded = Request(request.scope, _limited(request.receive, limit))
    try:
        form = await bounded.form(max_files=MAX_FILES, max_fields=MAX_TEXT_FIELDS)
    except (MultiPartException, HTTPException) as exc:
        # starlette raises the latter for the former when it runs inside an app
        problem = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise ApiError(
            400, "invalid_multipart", f"the multipart body is malformed: {problem}"
        ) from exc
    try:
        return _parts(form)
    except ApiError:
        await form.close()
        raise


def _parts(form: FormData) -> EditForm:
    fields: dict[str, str] = {}
    images: list[UploadFile] = []
    mask: UploadFile | None = None
    for name, value in form.multi_items():
        if isinstance(value, str):
            fields[name] = value
        elif name in IMAGE_FIELDS:
            images.append(value)
        elif name == MASK_FIELD:
            if mask is not None:
                raise invalid("send one 'mask'", MASK_FIELD)
            mask = value
        else:
            raise invalid(f"Unrecognized request argument supplied: {name}", name)
    for name in (*IMAGE_FIELDS, MASK_FIELD):
        if name in fields:  # a text value where a file belongs
            raise invalid(f"'{name}' must be a file part of the multipart body", name)
    return EditForm(fields, images, mask, form)


async def store_file(
    upload: UploadFile, store: AssetStore, owner: str | None, param: str, limit: int
) -> str:
    """The `asset:<id>` an uploaded file is stored as, or a 400/413 naming `param`."""
    try:
        asset, _ = await store.add_stream(
            _chunks(upload), limit, filename=upload.filename, owner=owner
        )
    except MediaInputError as exc:
        status = 413 if exc.code == INPUT_TOO_LARGE else 400
        raise ApiError(status, exc.code, f"'{param}': {exc.message}", {"param": param}) from exc
    return f"asset:{asset.id}"


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    await upload.seek(0)
    while chunk := await upload.read(_CHUNK):
        yield chunk
