"""An in-memory `Storage` for the unit tests of the modules that store outputs.

It keeps the same rules as the real backends (key checks, hashing, not-found) and can be told to
fail, so a runner test can check what happens when the store is down without any server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from comfyfleet.storage._base import DEFAULT_CONTENT_TYPE, StoredObject
from comfyfleet.storage._errors import ObjectNotFound, StorageError
from comfyfleet.storage._keys import check_key, quote_key


class MemoryStorage:
    """Objects in a dict. Set `fail` to an error and every call raises it (until reset)."""

    def __init__(self, public_base_url: str = "memory://") -> None:
        self.public_base_url = public_base_url
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.fail: StorageError | None = None
        self.closed = False

    def url_for(self, key: str) -> str:
        return self.public_base_url + quote_key(check_key(key))

    async def put(
        self, key: str, source: bytes | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        self._maybe_fail()
        check_key(key)
        data = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
        self.objects[key] = (data, content_type)
        digest = hashlib.sha256(data).hexdigest()
        return StoredObject(key, self.url_for(key), content_type, len(data), digest)

    async def get(self, key: str) -> bytes:
        self._maybe_fail()
        try:
            return self.objects[check_key(key)][0]
        except KeyError:
            raise ObjectNotFound(f"memory object '{key}'") from None

    async def delete(self, key: str) -> None:
        self._maybe_fail()
        self.objects.pop(check_key(key), None)

    async def check(self) -> None:
        self._maybe_fail()

    async def close(self) -> None:
        self.closed = True

    def _maybe_fail(self) -> None:
        if self.fail is not None:
            raise self.fail
