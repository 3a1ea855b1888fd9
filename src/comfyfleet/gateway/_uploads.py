"""Receiving an uploaded file as an asset: multipart (any one file field, with the text fields
around it) or the raw body, streamed into the asset store under a size limit.

Shared by `POST /v1/assets` and the ComfyUI API's `/upload/image` and `/upload/mask`, which name
their file field `image` and send fields (`type`, `subfolder`, `original_ref`) beside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from comfyfleet.assets import (
    EMPTY_INPUT,
    INPUT_TOO_LARGE,
    Asset,
    AssetStore,
    MediaInputError,
)
from comfyfleet.gateway._errors import ApiError

_MEDIA_PREFIXES = ("image/", "video/", "audio/", "application/octet-stream")
_MAX_BOUNDARY = 70
_MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart body may carry beyond the file limit (boundaries, part headers, fields)."""


@dataclass(frozen=True)
class Upload:
    asset: Asset
    created: bool
    """New to this owner (201) rather than stored already (200)."""
    fields: Mapping[str, str]
    """The multipart body's text fields."""


async def receive_upload(
    request: Request,
    store: AssetStore,
    limit: int,
    *,
    owner: str | None,
    filename: str | None = None,
    field: str = "file",
) -> Upload:
    """Store the request's file; an `ApiError` (413 over `limit`, 400 empty or malformed, 415
    not a file) for what the client got wrong."""
    try:
        return await _store_upload(request, store, limit, filename, owner, field)
    except MediaInputError as exc:
        if exc.code == INPUT_TOO_LARGE:
            raise _too_large(limit) from exc
        if exc.code == EMPTY_INPUT:
            raise ApiError(400, "empty_upload", "the uploaded file is empty") from exc
        raise ApiError(422, exc.code, exc.message, {"hint": exc.hint}) from exc


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"the upload is larger than the limit of {limit} bytes",
        {"limit": limit},
    )


class _MultipartFile:
    """Streams the data of one file part out of a multipart body as it arrives, and keeps the
    small text fields around it (at most `_MULTIPART_SLACK` bytes of them)."""

    def __init__(
        self, source: AsyncIterator[bytes], boundary: bytes, limit: int, field: bytes
    ) -> None:
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        """The other (text) fields, as far as the body was read."""
        self._wanted = field
        self._text_name: str | None = None
        self._text = bytearray()
        self._ended = False
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
                "on_end": self._end,
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

    async def finish(self) -> None:
        """Read the rest of the body, for the fields that follow the file."""
        while not self._ended:
            if not await self._feed_next(until_end=True):
                return

    async def _feed_next(self, until_end: bool = False) -> bool:
        chunk = await anext(self._source, None)
        if chunk is None and until_end:
            return False
        if chunk is None:
            if not self._found:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"the multipart body has no '{self._wanted.decode()}' field",
                )
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
        return True

    def _add_header(self, *, field: bytes = b"", value: bytes = b"") -> None:
        self._field += field
        self._value += value

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _kind, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"")
        if name == self._wanted and not self._found:
            self._found = self._in_file = True
            filename = options.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename else None
        elif b"filename" not in options:
            self._text_name = name.decode("utf-8", "replace")
            self._text.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(bytes(data[start:end]))
        elif self._text_name is not None and len(self._text) + end - start <= _MULTIPART_SLACK:
            self._text += data[start:end]

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._done = True
        elif self._text_name is not None:
            self.fields[self._text_name] = self._text.decode("utf-8", "replace")
            self._text_name = None

    def _end(self) -> None:
        self._ended = True


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
    request: Request,
    store: AssetStore,
    limit: int,
    filename: str | None,
    owner: str | None,
    field: str,
) -> Upload:
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    media_type = kind.decode("latin-1").lower()
    async with aclosing(request.stream()) as source:
        if media_type == "multipart/form-data":
            boundary = _boundary(options)
            _check_length(request, limit + _MULTIPART_SLACK, limit)
            upload = _MultipartFile(source, boundary, limit + _MULTIPART_SLACK, field.encode())
            await upload.start()
            chunks = upload.chunks()
            asset, created = await store.add_stream(
                chunks, limit, filename=upload.filename, owner=owner
            )
            await upload.finish()
            return Upload(asset, created, dict(upload.fields))
        if media_type.startswith(_MEDIA_PREFIXES):
            _check_length(request, limit, limit)
            asset, created = await store.add_stream(source, limit, filename=filename, owner=owner)
            return Upload(asset, created, {})
    raise ApiError(
        415,
        "unsupported_media_type",
        f"cannot upload a body of type {media_type or 'none'!r}",
        {
            "hint": "send multipart/form-data with a 'file' field, or the raw file with its "
            "image/*, video/*, audio/* or application/octet-stream Content-Type"
        },
    )
