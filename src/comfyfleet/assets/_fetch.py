"""Fetching a media input from a URL, once, within limits, without reaching inside the network.

http(s) goes through the SSRF guard (`comfyfleet.netguard.GuardedClient`: every address and every
redirect hop checked, the connection made to the checked IP). `s3://` and `az://` go to readers
that the storage package provides, passed in per scheme; any other scheme is refused. The size
limit is checked on the announced Content-Length first and then counted while streaming (a server
may announce nothing, or lie), and the whole fetch, redirects included, has one deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from comfyfleet.assets._errors import (
    URL_NOT_FOUND,
    URL_REFUSED,
    URL_UNREACHABLE,
    MediaInputError,
    too_large,
)
from comfyfleet.assets._settings import AssetSettings
from comfyfleet.assets._store import DEFAULT_MAX_UPLOAD_BYTES, Asset, AssetStore
from comfyfleet.errors import ComfyfleetError
from comfyfleet.netguard import (
    GuardedClient,
    GuardedResponse,
    NetGuardError,
    NetPolicy,
    Resolver,
    short_url,
    system_resolve,
)

ObjectReader = Callable[[str, int], Awaitable[bytes]]
"""`(url, max_bytes) -> bytes` for one object-store scheme (`s3`, `az`).

Contract: return the object's bytes (more than `max_bytes` is refused here anyway); raise
`FileNotFoundError` for a missing object; raise `OSError` or a `ComfyfleetError` for anything that
makes it unreadable (credentials, network). Other exceptions are bugs and propagate.
"""

T = TypeVar("T")

_HTTP = ("http", "https")
_OBJECT_SCHEMES = ("s3", "az")
_CHUNK = 64 * 1024


def _scheme(url: str) -> str:
    head, sep, _rest = url.partition("://")
    return head.lower() if sep else ""


def url_filename(url: str) -> str | None:
    """The last path segment of `url`, decoded (kept as the asset's original file name)."""
    path = urlsplit(url).path
    name = unquote(path.rsplit("/", 1)[-1]) if path else ""
    return name or None


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


class UrlFetcher:
    """Fetches http(s), s3 and az URLs for media inputs; see the module docstring.

    `readers` maps "s3"/"az" to an :data:`ObjectReader`; `resolve` and `verify` are the guard's
    seams (tests point names at local servers, or trust a private CA).
    """

    def __init__(
        self,
        *,
        policy: NetPolicy | None = None,
        max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        timeout_s: float = 60.0,
        max_redirects: int = 3,
        readers: Mapping[str, ObjectReader] | None = None,
        resolve: Resolver = system_resolve,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.readers = {k.lower().removesuffix("://"): v for k, v in (readers or {}).items()}
        self._client = GuardedClient(
            policy, timeout_s=timeout_s, max_redirects=max_redirects, resolve=resolve, verify=verify
        )

    @classmethod
    def from_settings(
        cls,
        settings: AssetSettings,
        *,
        readers: Mapping[str, ObjectReader] | None = None,
        resolve: Resolver = system_resolve,
        verify: ssl.SSLContext | bool = True,
    ) -> UrlFetcher:
        return cls(
            policy=settings.net_policy(),
            max_bytes=settings.max_url_bytes,
            timeout_s=settings.fetch_timeout_s,
            max_redirects=settings.max_redirects,
            readers=readers,
            resolve=resolve,
            verify=verify,
        )

    async def fetch(self, url: str) -> bytes:
        """The bytes at `url` (at most `max_bytes`), or :class:`MediaInputError`."""
        parts: list[bytes] = []

        async def collect(chunks: AsyncIterator[bytes]) -> None:
            async for chunk in chunks:
                parts.append(chunk)

        await self._run(url, collect)
        return b"".join(parts)

    async def fetch_into(self, store: AssetStore, url: str) -> tuple[Asset, bool]:
        """Stream `url` into `store` (never whole in memory); the asset and whether it is new."""
        name = url_filename(url)

        async def save(chunks: AsyncIterator[bytes]) -> tuple[Asset, bool]:
            return await store.add_stream(chunks, self.max_bytes, filename=name)

        return await self._run(url, save)

    async def _run(self, url: str, consume: Callable[[AsyncIterator[bytes]], Awaitable[T]]) -> T:
        scheme = _scheme(url)
        try:
            async with asyncio.timeout(self.timeout_s):
                if scheme in self.readers:
                    return await consume(_single(await self._read_object(scheme, url)))
                self._check_scheme(scheme)
                async with self._client.stream("GET", url) as result:
                    self._check_answer(result)
                    async with aclosing(self._chunks(result)) as chunks:
                        return await consume(chunks)
        except TimeoutError as exc:
            raise MediaInputError(
                URL_UNREACHABLE,
                f"fetching {short_url(url)} took longer than {self.timeout_s:g} s",
                hint="use a faster source, or upload the file with POST /v1/assets",
            ) from exc
        except NetGuardError as exc:
            raise MediaInputError.from_guard(exc) from exc

    @staticmethod
    def _check_scheme(scheme: str) -> None:
        if scheme in _HTTP:
            return
        if scheme in _OBJECT_SCHEMES:
            raise MediaInputError(
                URL_REFUSED,
                f"{scheme}:// URLs cannot be read here: no {scheme} storage is configured",
                hint="configure the storage, or give an http(s) URL",
            )
        shown = f"{scheme}:// URLs" if scheme else "URLs without a scheme"
        raise MediaInputError(
            URL_REFUSED, f"{shown} are not fetched", hint="give an http(s)://, s3:// or az:// URL"
        )

    def _check_answer(self, result: GuardedResponse) -> None:
        response, url = result.response, short_url(result.url)
        status = response.status_code
        if status in (404, 410):
            raise MediaInputError(
                URL_NOT_FOUND, f"{url} answered {status} (not found)", hint="check the URL"
            )
        if status >= 300:
            raise MediaInputError(
                URL_UNREACHABLE,
                f"{url} answered {status} {response.reason_phrase}".rstrip(),
                hint="check that the URL can be downloaded without logging in",
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large(self.max_bytes, f"{url} ({int(declared)} bytes announced)")

    async def _chunks(self, result: GuardedResponse) -> AsyncGenerator[bytes, None]:
        total = 0
        try:
            async for chunk in result.response.aiter_bytes(_CHUNK):
                total += len(chunk)
                if total > self.max_bytes:
                    raise too_large(self.max_bytes, short_url(result.url))
                yield chunk
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise MediaInputError(
                URL_UNREACHABLE, f"{short_url(result.url)} broke off after {total} bytes: {reason}"
            ) from exc

    async def _read_object(self, scheme: str, url: str) -> bytes:
        reader = self.readers[scheme]
        try:
            data = await reader(url, self.max_bytes)
        except MediaInputError:
            raise
        except FileNotFoundError as exc:
            raise MediaInputError(
                URL_NOT_FOUND, f"{short_url(url)} does not exist", hint="check the URL"
            ) from exc
        except (OSError, ComfyfleetError) as exc:
            reason = exc.message if isinstance(exc, ComfyfleetError) else str(exc)
            hint = exc.hint if isinstance(exc, ComfyfleetError) else None
            raise MediaInputError(
                URL_UNREACHABLE,
                f"cannot read {short_url(url)}: {reason or type(exc).__name__}",
                hint=hint or "check the storage settings and that the object is readable",
            ) from exc
        if len(data) > self.max_bytes:
            raise too_large(self.max_bytes, short_url(url))
        return data
