"""Content hashes as the contract names them (`blake3:<hex>`), over a store keyed by SHA-256.

The fleet's `AssetStore` addresses bytes by SHA-256; Comfy API v2 clients hash with BLAKE3 and
probe the server with that hash before uploading (`HEAD /assets/by-hash/{hash}`,
`POST /assets/from-hash`). `HashIndex` keeps, beside the store, which BLAKE3 digest belongs to
which SHA-256 asset: one small file per direction, written only from bytes this server hashed
itself, so a client can never make a hash name bytes it does not describe.

BLAKE3 comes from the optional `blake3` package (the one the SDK itself uses). Without it the
index stays empty: a probe by BLAKE3 answers "not here", the client uploads, and the upload is
kept without a BLAKE3 hash (reported as null, which the contract allows). `sha256:<hex>` hashes
work either way, since they are the store's own ids.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Hasher(Protocol):
    def update(self, data: bytes, /) -> Any: ...
    def hexdigest(self) -> str: ...


def new_blake3() -> Hasher | None:
    """A BLAKE3 hasher, or None when the `blake3` package is not installed."""
    try:
        from blake3 import blake3
    except ImportError:
        return None
    hasher: Hasher = blake3()
    return hasher


def parse_hash(text: str) -> tuple[str, str] | None:
    """(algorithm, hex) of `blake3:<hex>` or `sha256:<hex>` (case-insensitive); None otherwise."""
    algorithm, sep, digest = text.strip().lower().partition(":")
    if not sep or algorithm not in ("blake3", "sha256") or not _HEX64.match(digest):
        return None
    return algorithm, digest


class HashIndex:
    """BLAKE3 <-> SHA-256 of stored assets, as files under `folder` (made on first write)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def sha256_of(self, blake3_hex: str) -> str | None:
        return self._read(self.folder / "blake3" / blake3_hex)

    def blake3_of(self, sha256_hex: str) -> str | None:
        return self._read(self.folder / "sha256" / sha256_hex)

    def add(self, blake3_hex: str, sha256_hex: str) -> None:
        if not (_HEX64.match(blake3_hex) and _HEX64.match(sha256_hex)):
            raise ValueError("index entries are 64 lowercase hex digits")
        self._write(self.folder / "blake3" / blake3_hex, sha256_hex)
        self._write(self.folder / "sha256" / sha256_hex, blake3_hex)

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            value = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return value if _HEX64.match(value) else None

    @staticmethod
    def _write(path: Path, value: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(value)
            os.replace(name, path)
        finally:
            Path(name).unlink(missing_ok=True)


def blake3_of_file(path: Path) -> str | None:
    """The BLAKE3 hex of a file (None without the `blake3` package)."""
    hasher = new_blake3()
    if hasher is None:
        return None
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()
