"""Input media stored once, by content, where ComfyUI's loaders read them.

Layout, inside ComfyUI's input folder:

    comfyfleet-assets/<sha256>.<ext>          the bytes (ext sniffed from them, see `_sniff`)
    comfyfleet-assets/.meta/<sha256>.json     content type, size, original file name, created

An asset's id is the full SHA-256 of its bytes in lowercase hex (64 digits; "sha256:" in front and
upper case are accepted on the way in). Short prefixes are not accepted: an id that names a file
is worth 64 characters of certainty. The same bytes added twice are the same asset. Every write is
a temp file in the same folder, fsynced, then renamed into place, so ComfyUI (or a reader of the
content route) never sees half a file. The metadata goes in before the bytes: an asset exists once
its bytes file does. The client's file name is metadata only; paths are built from the hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from comfyfleet.assets._errors import (
    ASSET_NOT_FOUND,
    EMPTY_INPUT,
    AssetNotFound,
    MediaInputError,
    too_large,
)
from comfyfleet.assets._sniff import SNIFF_BYTES, sniff

ASSETS_FOLDER = "comfyfleet-assets"
"""The folder under ComfyUI's input folder that holds the assets."""

DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024

_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Asset:
    """One stored input file."""

    id: str
    content_type: str
    ext: str
    size: int
    filename: str | None
    """The client's file name, cleaned; never used to build a path."""
    created_at: float

    @property
    def sha256(self) -> str:
        return self.id

    @property
    def file_name(self) -> str:
        return f"{self.id}.{self.ext}"

    @property
    def comfy_name(self) -> str:
        """What a ComfyUI loader input needs: the path relative to the input folder."""
        return f"{ASSETS_FOLDER}/{self.file_name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.comfy_name,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "filename": self.filename,
            "created_at": self.created_at,
        }


def normalize_id(asset_id: str) -> str:
    """The canonical form of an asset id, or :class:`AssetNotFound` when it cannot be one."""
    value = asset_id.strip().lower().removeprefix("sha256:")
    if not _ID.match(value):
        raise AssetNotFound(
            ASSET_NOT_FOUND,
            f"{asset_id[:80]!r} is not an asset id",
            hint="an asset id is the 64 hex digits of the file's SHA-256, as POST /v1/assets "
            "answers it",
        )
    return value


def clean_filename(name: str | None) -> str | None:
    """The last path segment of a client's file name, printable, at most 255 characters."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()[:255]
    return base or None


class AssetStore:
    """Content-addressed input files under `input_dir / "comfyfleet-assets"`.

    Nothing touches the disk until the first write. `max_bytes` is the default limit of
    :meth:`add_bytes` and :meth:`add_stream`.
    """

    def __init__(self, input_dir: Path, *, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
        self.input_dir = Path(input_dir)
        self.folder = self.input_dir / ASSETS_FOLDER
        self.max_bytes = max_bytes

    async def add_bytes(
        self, data: bytes, *, filename: str | None = None, max_bytes: int | None = None
    ) -> tuple[Asset, bool]:
        """Store `data`; returns the asset and whether it is new (False: it was there already)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if len(data) > limit:
            raise too_large(limit)
        if not data:
            raise MediaInputError(EMPTY_INPUT, "the input is empty (0 bytes)")
        return await asyncio.to_thread(self._add_bytes, data, filename)

    async def add_stream(
        self,
        chunks: AsyncIterable[bytes],
        max_bytes: int | None = None,
        *,
        filename: str | None = None,
    ) -> tuple[Asset, bool]:
        """Store the bytes of `chunks`, hashing them on the way to a temp file; more than
        `max_bytes` stops the stream with `input_too_large` and leaves nothing behind."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        out, temp = self._temp()
        try:
            digest, head, size = await self._receive(out, chunks, limit)
            if size == 0:
                raise MediaInputError(EMPTY_INPUT, "the input is empty (0 bytes)")
        except BaseException:
            out.close()
            temp.unlink(missing_ok=True)
            raise
        # from here the worker thread owns the temp file, even if this task is cancelled
        return await asyncio.to_thread(self._finish, out, temp, digest, head, size, filename)

    def get(self, asset_id: str) -> Asset:
        """The asset with this id, or :class:`AssetNotFound`."""
        digest = normalize_id(asset_id)
        try:
            raw = json.loads(self._meta_path(digest).read_text(encoding="utf-8"))
            asset = Asset(**{name: raw[name] for name in Asset.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AssetNotFound.for_id(asset_id) from exc
        if asset.id != digest or not (self.folder / asset.file_name).is_file():
            raise AssetNotFound.for_id(asset_id)
        return asset

    def path(self, asset_id: str) -> Path:
        return self.folder / self.get(asset_id).file_name

    def comfy_name(self, asset_id: str) -> str:
        return self.get(asset_id).comfy_name

    def delete(self, asset_id: str) -> Asset:
        """Remove the asset (bytes first, so it is gone at once); returns what was removed."""
        asset = self.get(asset_id)
        (self.folder / asset.file_name).unlink(missing_ok=True)
        self._meta_path(asset.id).unlink(missing_ok=True)
        return asset

    def _meta_path(self, digest: str) -> Path:
        return self.folder / ".meta" / f"{digest}.json"

    def _existing(self, digest: str) -> Asset | None:
        try:
            return self.get(digest)
        except AssetNotFound:
            return None

    def _temp(self, folder: Path | None = None) -> tuple[IO[bytes], Path]:
        where = folder or self.folder
        where.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=where)
        return os.fdopen(fd, "wb"), Path(name)

    @staticmethod
    async def _receive(
        out: IO[bytes], chunks: AsyncIterable[bytes], limit: int
    ) -> tuple[str, bytes, int]:
        digest = hashlib.sha256()
        head = bytearray()
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            digest.update(chunk)
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            out.write(chunk)
        return digest.hexdigest(), bytes(head), size

    def _add_bytes(self, data: bytes, filename: str | None) -> tuple[Asset, bool]:
        digest = hashlib.sha256(data).hexdigest()
        existing = self._existing(digest)
        if existing is not None:
            return existing, False
        out, temp = self._temp()
        try:
            out.write(data)
        except BaseException:
            out.close()
            temp.unlink(missing_ok=True)
            raise
        return self._finish(out, temp, digest, data[:SNIFF_BYTES], len(data), filename)

    def _finish(
        self,
        out: IO[bytes],
        temp: Path,
        digest: str,
        head: bytes,
        size: int,
        filename: str | None,
    ) -> tuple[Asset, bool]:
        """Flush and fsync the temp file, then move it into place (or drop it: a duplicate)."""
        try:
            with out:
                _sync(out)
            return self._commit(temp, digest, head, size, filename)
        finally:
            temp.unlink(missing_ok=True)

    def _commit(
        self, temp: Path, digest: str, head: bytes, size: int, filename: str | None
    ) -> tuple[Asset, bool]:
        existing = self._existing(digest)
        if existing is not None:
            return existing, False
        media = sniff(head)
        asset = Asset(
            id=digest,
            content_type=media.content_type,
            ext=media.ext,
            size=size,
            filename=clean_filename(filename),
            created_at=time.time(),
        )
        meta, meta_temp = self._temp(self._meta_path(digest).parent)
        try:
            with meta:
                meta.write(json.dumps(asdict(asset), sort_keys=True).encode())
                _sync(meta)
            os.replace(meta_temp, self._meta_path(digest))
        finally:
            meta_temp.unlink(missing_ok=True)
        os.chmod(temp, 0o644)
        os.replace(temp, self.folder / asset.file_name)
        return asset, True


def _sync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
