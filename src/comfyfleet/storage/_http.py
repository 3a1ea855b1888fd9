"""`HttpPutStorage`: each object is PUT to a prefix URL + key (a web server, a bucket behind a
proxy, a presigning service ...).

Connection errors, timeouts, 408, 429 and 5xx answers are retried a few times with a growing
pause; each try streams the source again through a fresh hashing reader, so the digest always
describes the bytes of the try that succeeded. Messages show the URL without user info or query.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from comfyfleet.storage._base import DEFAULT_CONTENT_TYPE, StoredObject
from comfyfleet.storage._errors import (
    AccessDenied,
    ObjectNotFound,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
)
from comfyfleet.storage._keys import check_key, quote_key
from comfyfleet.storage._source import CHUNK, HashingReader, check_read_all, open_source

_RETRY_STATUS = frozenset({408, 425, 429})

T = TypeVar("T")


class HttpPutStorage:
    """PUT to `prefix_url` + key; GET and DELETE the same URL. `transport` is a seam for tests."""

    def __init__(
        self,
        prefix_url: str,
        headers: Mapping[str, str] | None = None,
        *,
        public_base_url: str | None = None,
        attempts: int = 3,
        retry_backoff_s: float = 0.5,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(prefix_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise StorageConfigError(f"'{redact(prefix_url)}' is not an http(s) URL")
        if parts.query or parts.fragment:
            raise StorageConfigError(
                "the HTTP storage URL cannot have a query string or fragment",
                hint="put tokens into the request headers instead",
            )
        self.prefix_url = prefix_url if prefix_url.endswith("/") else prefix_url + "/"
        self.public_base_url = public_base_url
        self.attempts = max(1, attempts)
        self.retry_backoff_s = retry_backoff_s
        self._client = httpx.AsyncClient(
            headers=dict(headers or {}),
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"HttpPutStorage(prefix_url={redact(self.prefix_url)!r})"

    def object_url(self, key: str) -> str:
        return self.prefix_url + quote_key(check_key(key))

    def url_for(self, key: str) -> str:
        if self.public_base_url is not None:
            return self.public_base_url + quote_key(check_key(key))
        return self.object_url(key)

    async def put(
        self, key: str, source: bytes | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        url = self.object_url(key)

        async def once() -> StoredObject:
            reader, expected = open_source(source)
            with reader:
                headers = {"Content-Type": content_type, "Content-Length": str(expected)}
                response = await self._send("PUT", url, content=_body(reader), headers=headers)
                if not response.is_success:
                    raise _refused(url, response.status_code)
                check_read_all(reader, expected, redact(url))
            return StoredObject(key, self.url_for(key), content_type, reader.size, reader.sha256)

        return await self._retrying(once)

    async def get(self, key: str) -> bytes:
        response = await self._request("GET", self.object_url(key), ok_missing=False)
        return response.content

    async def delete(self, key: str) -> None:
        await self._request("DELETE", self.object_url(key), ok_missing=True)

    async def check(self) -> None:
        """One HEAD of the prefix: any answer below 500 other than 401/403 proves the server is
        there (many PUT receivers answer 404 or 405 for the prefix itself)."""
        status = (await self._send("HEAD", self.prefix_url)).status_code
        if status >= 500 or status in _RETRY_STATUS or status in (401, 403):
            raise _refused(self.prefix_url, status)

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, url: str, *, ok_missing: bool) -> httpx.Response:
        async def once() -> httpx.Response:
            response = await self._send(method, url)
            if response.is_success or (ok_missing and response.status_code == 404):
                return response
            if response.status_code == 404:
                raise ObjectNotFound(redact(url))
            raise _refused(url, response.status_code)

        return await self._retrying(once)

    async def _send(self, method: str, url: str, **options: Any) -> httpx.Response:
        """One request; not reaching the server is StorageUnavailable."""
        try:
            return await self._client.request(method, url, **options)
        except httpx.TransportError as exc:
            raise StorageUnavailable(
                f"{redact(url)}: cannot reach the HTTP storage ({type(exc).__name__})",
                hint="check that the server is up and the storage URL is right; "
                "the call can be retried",
            ) from exc

    async def _retrying(self, once: Callable[[], Awaitable[T]]) -> T:
        """`once()`, tried again after a growing pause while it raises StorageUnavailable, up to
        `attempts` tries in all; the last try's error is raised as it is."""
        for attempt in range(1, self.attempts):
            try:
                return await once()
            except StorageUnavailable:
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
        return await once()


async def _body(reader: HashingReader) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(reader.read, CHUNK):
        yield chunk


def redact(url: str) -> str:
    """The URL without user info, query string or fragment: safe for messages and logs."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _refused(url: str, status: int) -> StorageError:
    where = redact(url)
    if status >= 500 or status in _RETRY_STATUS:
        return StorageUnavailable(
            f"{where}: the HTTP storage answered {status}", hint="the server is busy; retry later"
        )
    if status in (401, 403):
        return AccessDenied(
            f"{where}: the HTTP storage refused the credentials ({status})",
            hint="check the Authorization header in http_headers",
        )
    return StorageConfigError(
        f"{where}: the HTTP storage refused the request ({status})",
        hint="check the storage URL; the server must accept PUT under it",
    )
