"""Reading what `put` stores exactly once, hashing and counting on the way.

Backends hand a `HashingReader` to the upload (boto3, azure-storage-blob, httpx or a local
copy) instead of the file, so the sha256 and size in the result describe the bytes that were
actually sent. The reader says it cannot seek: the SDKs then read it front to back and keep each
part in memory for their own retries, instead of re-reading (and re-hashing) the file.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

from comfyfleet.storage._errors import StorageError

CHUNK = 1024 * 1024


class HashingReader:
    """A read-only, forward-only view of `raw` that hashes and counts what is read."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_source(source: bytes | Path) -> tuple[HashingReader, int]:
    """A fresh reader over `source` and its expected size. Close the reader when done."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return HashingReader(io.BytesIO(data)), len(data)
    try:
        handle = Path(source).open("rb")
    except OSError as exc:
        raise StorageError(
            f"cannot read the file to store, {source}: {exc.strerror or exc}",
            hint="the output may have been removed before it was uploaded",
        ) from exc
    return HashingReader(handle), os.fstat(handle.fileno()).st_size


def check_read_all(reader: HashingReader, expected: int, where: str) -> None:
    """After an upload: the file must not have changed size while it was read."""
    if reader.size != expected:
        raise StorageError(
            f"{where}: the source changed while it was stored "
            f"(expected {expected} bytes, read {reader.size})",
            hint="store a file only after the program writing it has finished",
        )
