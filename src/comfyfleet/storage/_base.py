"""The `Storage` interface every backend implements, and what a stored object is.

A backend is an object the caller builds once (`open_storage`) and passes down, like the job
store: the runner only ever sees this Protocol, so its tests use `MemoryStorage` and the real
backends are tested against real servers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class StoredObject:
    """One object after a successful `put`. `url` is where a client can fetch it (for S3 and
    Azure a signed URL that expires, so ask `url_for` again when handing it out later)."""

    key: str
    url: str
    content_type: str
    size: int
    sha256: str
    """Hex digest of exactly the bytes stored, computed while they were read."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Storage(Protocol):
    """A place for job inputs and outputs, addressed by relative POSIX keys.

    Every method raises `StorageUnavailable` when the store cannot be reached (retry later),
    `StorageConfigError` when the settings are wrong, `InvalidKey` for a key that could escape
    its folder, and `ObjectNotFound` from `get` for a key that was never stored.
    """

    async def put(
        self, key: str, source: bytes | Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredObject:
        """Store `source` (bytes, or a file read once while hashing) under `key`, replacing
        any object already there. Readers never see a partly written object."""
        ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a key that is not there is not an error."""
        ...

    async def check(self) -> None:
        """A cheap round trip that proves the store answers and the settings are accepted."""
        ...

    def url_for(self, key: str) -> str:
        """Where a client fetches `key` now (signing needs no round trip)."""
        ...

    async def close(self) -> None: ...
