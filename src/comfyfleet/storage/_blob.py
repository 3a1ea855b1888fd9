"""`BlobStorage`: what the S3 and Azure backends share, written once.

Both address an object as container + prefix + key, and drive a blocking SDK: every call runs in
a thread, and the SDK's exceptions become storage errors through the backend's translator. `put`
hands the SDK a forward-only hashing reader with the known length, so the size and sha256 in the
result describe the bytes that were sent. Results carry a signed read URL, or `public_base_url`
+ object name when the container is served publicly. A backend adds only what is its own: its
`StoreDialect`, its client, how it signs, and the SDK calls for upload, download, delete and the
container check.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from comfyfleet.storage._answers import StoreDialect
from comfyfleet.storage._base import DEFAULT_CONTENT_TYPE, StoredObject
from comfyfleet.storage._errors import ObjectNotFound, StorageError, translated
from comfyfleet.storage._keys import check_key, check_prefix, quote_key
from comfyfleet.storage._settings import StorageSettings
from comfyfleet.storage._source import HashingReader, check_read_all, open_source

T = TypeVar("T")


class BlobStorage(ABC):
    """The `Storage` interface on one container and prefix of an object store."""

    dialect: ClassVar[StoreDialect]
    _client: Any
    """The SDK client; `close` closes it."""

    def __init__(self, container: str, prefix: str, settings: StorageSettings | None) -> None:
        self.settings = settings or StorageSettings()
        self.container = container
        self.prefix = check_prefix(prefix)

    def object_name(self, key: str) -> str:
        """The name `key` is stored under: the prefix, then the checked key."""
        return self.prefix + check_key(key)

    def url_for(self, key: str) -> str:
        name = self.object_name(key)
        if self.settings.public_base_url is not None:
            return self.settings.public_base_url + quote_key(name)
        with self._translated(name):
            return self._signed_url(name)

    async def put(
        self, key: str, source: bytes | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        name = self.object_name(key)
        size, digest = await self._call(lambda: self._put_hashed(name, source, content_type), name)
        return StoredObject(key, self.url_for(key), content_type, size, digest)

    async def get(self, key: str) -> bytes:
        name = self.object_name(key)
        return await self._call(lambda: self._download(name), name)

    async def delete(self, key: str) -> None:
        name = self.object_name(key)
        try:
            await self._call(lambda: self._delete(name), name)
        except ObjectNotFound:
            return

    async def check(self) -> None:
        await self._call(self._check_container, "")

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    def _put_hashed(self, name: str, source: bytes | Path, content_type: str) -> tuple[int, str]:
        reader, expected = open_source(source)
        with reader:
            self._upload(name, reader, expected, content_type)
        check_read_all(reader, expected, self.dialect.where(self.container, name))
        return reader.size, reader.sha256

    async def _call(self, work: Callable[[], T], name: str) -> T:
        """`work()` in a thread, its SDK failures raised as storage errors about `name`."""
        with self._translated(name):
            return await asyncio.to_thread(work)

    def _translated(self, name: str) -> AbstractContextManager[None]:
        return translated(lambda exc: self._error(exc, name))

    @abstractmethod
    def _error(self, exc: Exception, name: str) -> StorageError | None:
        """The storage error for an SDK failure on `name` ('' for the container itself)."""

    @abstractmethod
    def _signed_url(self, name: str) -> str:
        """A read URL for `name` that needs no credentials until it expires."""

    @abstractmethod
    def _upload(self, name: str, reader: HashingReader, length: int, content_type: str) -> None:
        """Send `length` bytes from `reader` to `name`, replacing what is there."""

    @abstractmethod
    def _download(self, name: str) -> bytes: ...

    @abstractmethod
    def _delete(self, name: str) -> None: ...

    @abstractmethod
    def _check_container(self) -> None:
        """One cheap request about the container itself."""
