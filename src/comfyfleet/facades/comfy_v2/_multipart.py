"""Reading the contract's asset upload: multipart/form-data with a `file` part and small text
fields (`file_path`, `content_type`, `expected_hash`, `tags`), streamed.

The file's bytes go to the asset store as they arrive (never whole in memory, never a second
temporary copy); the text fields before it are read first, those after it once the file is
stored. A text field is at most `MAX_FIELD_BYTES`, and there are at most `MAX_FIELDS` of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from comfyfleet.gateway import ApiError

MAX_FIELD_BYTES = 8 * 1024
MAX_FIELDS = 64
_MAX_BOUNDARY = 70


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind.decode("latin-1").lower() != "multipart/form-data":
        raise ApiError(422, "invalid_request", "expected multipart/form-data with a 'file' part")
    boundary = options.get(b"boundary", b"")
    if not 0 < len(boundary) <= _MAX_BOUNDARY:
        raise ApiError(400, "invalid_request", "the multipart boundary must be 1-70 characters")
    return boundary


class UploadForm:
    """The parts of one upload, fed from the request body as they are needed."""

    def __init__(self, source: AsyncIterator[bytes], boundary: bytes, limit: int) -> None:
        self.fields: dict[str, list[str]] = {}
        self.filename: str | None = None
        self._source = source
        self._limit = limit
        self._read = 0
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._part: str | None = None
        self._value = bytearray()
        self._file_seen = self._file_done = self._ended = False
        self._pending: list[bytes] = []
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": lambda d, s, e: self._add_header(0, d[s:e]),
                "on_header_value": lambda d, s, e: self._add_header(1, d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end_part,
                "on_end": self._end,
            },
        )

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    async def start(self) -> None:
        """Read up to the start of the `file` part (422 when the body has none)."""
        while not self._file_seen:
            if not await self._feed():
                raise ApiError(422, "invalid_request", "the multipart body has no 'file' part")

    async def file_chunks(self) -> AsyncIterator[bytes]:
        while True:
            pending, self._pending = self._pending, []
            for piece in pending:
                yield piece
            if self._file_done:
                return
            if not await self._feed():
                raise ApiError(400, "invalid_request", "the upload ended before the file did")

    async def finish(self) -> None:
        """Read the rest of the body (the fields after the file)."""
        while await self._feed():
            pass

    async def _feed(self) -> bool:
        chunk = await anext(self._source, None)
        if chunk is None:
            return False
        self._read += len(chunk)
        if self._read > self._limit:
            raise ApiError(413, "payload_too_large", f"the upload exceeds {self._limit} bytes")
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise ApiError(400, "invalid_request", f"malformed multipart body: {exc}") from exc
        return True

    def _begin(self) -> None:
        self._headers.clear()
        self._part = None
        self._value.clear()

    def _add_header(self, which: int, data: bytes) -> None:
        self._header[which] += data

    def _header_end(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _kind, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == "file" and not self._file_seen:
            self._file_seen = True
            raw = options.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw else None
            self._part = "file"
        elif name and name != "file":
            if sum(len(v) for v in self.fields.values()) >= MAX_FIELDS:
                raise ApiError(400, "invalid_request", f"more than {MAX_FIELDS} form fields")
            self._part = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self._pending.append(bytes(data[start:end]))
        elif self._part is not None:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise ApiError(
                    400, "invalid_request", f"form field '{self._part[:64]}' is too long"
                )

    def _end_part(self) -> None:
        if self._part == "file":
            self._file_done = True
        elif self._part is not None:
            text = self._value.decode("utf-8", "replace").strip()
            self.fields.setdefault(self._part, []).append(text)
        self._part = None

    def _end(self) -> None:
        self._ended = True
