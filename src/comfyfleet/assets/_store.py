"""Input media stored once, by content, where ComfyUI's loaders read them.

Layout, inside ComfyUI's input folder:

    comfyfleet-assets/<sha256>.<ext>          the bytes (ext sniffed from them, see `_sniff`)
    comfyfleet-assets/.meta/<sha256>.json     content type, size, original file name, created
    comfyfleet-assets/.meta/<sha256>.owners/<key id>   one per API key that uploaded it

An asset's id is the full SHA-256 of its bytes in lowercase hex (64 digits; "sha256:" in front and
upper case are accepted on the way in). Short prefixes are not accepted: an id that names a file
is worth 64 characters of certainty. The same bytes added twice are the same asset. Every write is
a temp file in the same folder, fsynced, then renamed into place, so ComfyUI (or a reader of the
content route) never sees half a file. The metadata goes in before the bytes: an asset exists once
its bytes file does. The client's file name is metadata only; paths are built from the hash.

Owners: the same bytes uploaded by two API keys are one file, owned by both. Each owner is a file
of its own, made with O_EXCL (two uploads at once cannot lose one), holding that owner's file name
and time, so one key never sees the name another key gave the same bytes, and "new" (201) means
new *to that key*: an upload cannot be used to learn that someone else has a file. Deleting as an
owner gives up that ownership; the bytes go with the last owner. Uploads without an owner (keys
off) record none; such assets are for admin keys once keys are turned on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterable
from dataclasses import asdict, dataclass, replace
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
_OWNER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
        self,
        data: bytes,
        *,
        filename: str | None = None,
        max_bytes: int | None = None,
        owner: str | None = None,
    ) -> tuple[Asset, bool]:
        """Store `data`; returns the asset and whether it is new (False: it was there already).
        With `owner`, the asset is recorded as theirs, and "new" means new to them."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if len(data) > limit:
            raise too_large(limit)
        if not data:
            raise MediaInputError(EMPTY_INPUT, "the input is empty (0 bytes)")
        return await asyncio.to_thread(self._add_bytes, data, filename, owner)

    async def add_stream(
        self,
        chunks: AsyncIterable[bytes],
        max_bytes: int | None = None,
        *,
        filename: str | None = None,
        owner: str | None = None,
    ) -> tuple[Asset, bool]:
        """Store the bytes of `chunks`, hashing them on the way to a temp file; more than
        `max_bytes` stops the stream with `input_too_large` and leaves nothing behind. `owner`
        as for :meth:`add_bytes`."""
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
        finish = self._finish
        return await asyncio.to_thread(finish, out, temp, digest, head, size, filename, owner)

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

    def use(self, asset_id: str) -> Asset:
        """The asset, marked as used now (its file's modification time): what retention
        measures an unused asset's age by. :class:`AssetNotFound` when it is gone, including
        when retention is taking it away at this moment (see `_sweep`)."""
        asset = self.get(asset_id)
        try:
            os.utime(self.folder / asset.file_name)
        except FileNotFoundError:
            raise AssetNotFound.for_id(asset_id) from None
        return asset

    def path(self, asset_id: str) -> Path:
        return self.folder / self.get(asset_id).file_name

    def comfy_name(self, asset_id: str) -> str:
        return self.get(asset_id).comfy_name

    def delete(self, asset_id: str) -> Asset:
        """Remove the asset (bytes first, so it is gone at once) whoever owns it; returns what
        was removed."""
        asset = self.get(asset_id)
        (self.folder / asset.file_name).unlink(missing_ok=True)
        self._meta_path(asset.id).unlink(missing_ok=True)
        shutil.rmtree(self._owners_path(asset.id), ignore_errors=True)
        return asset

    # --- owners -------------------------------------------------------------------------------

    def owns(self, asset_id: str, owner: str) -> bool:
        """Whether `owner` uploaded this asset (:class:`AssetNotFound` for a malformed id)."""
        return self._owner_path(normalize_id(asset_id), owner).is_file()

    def get_for(self, asset_id: str, owner: str) -> Asset:
        """The asset as `owner` uploaded it (their file name and time); :class:`AssetNotFound`,
        the same as for an id nobody uploaded, when it is not theirs."""
        asset = self.get(asset_id)
        marker = self._owner_path(asset.id, owner)
        try:
            mine = json.loads(marker.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AssetNotFound.for_id(asset_id) from None
        except (OSError, ValueError):
            return asset  # being written right now: the shared record will do
        return replace(asset, filename=mine.get("filename"), created_at=mine.get("created_at"))

    def release(self, asset_id: str, owner: str) -> None:
        """Give up `owner`'s ownership; the last owner leaving deletes the asset."""
        asset = self.get_for(asset_id, owner)
        self._owner_path(asset.id, owner).unlink(missing_ok=True)
        folder = self._owners_path(asset.id)
        try:
            folder.rmdir()  # refused while another owner is recorded
        except OSError:
            return
        (self.folder / asset.file_name).unlink(missing_ok=True)
        self._meta_path(asset.id).unlink(missing_ok=True)

    def _own(
        self, asset: Asset, created: bool, owner: str | None, filename: str | None
    ) -> tuple[Asset, bool]:
        """Record `owner` (if any) for a stored asset: (the asset as they see it, new to them)."""
        if owner is None:
            return asset, created
        if not _OWNER.match(owner):
            raise ValueError(f"an asset owner must be a key id, not {owner!r}")
        marker = self._owner_path(asset.id, owner)
        marker.parent.mkdir(parents=True, exist_ok=True)
        mine = replace(asset, filename=clean_filename(filename), created_at=time.time())
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return self.get_for(asset.id, owner), False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"filename": mine.filename, "created_at": mine.created_at}))
        return mine, True

    def _owners_path(self, digest: str) -> Path:
        return self.folder / ".meta" / f"{digest}.owners"

    def _owner_path(self, digest: str, owner: str) -> Path:
        if not _OWNER.match(owner):
            raise AssetNotFound.for_id(digest)
        return self._owners_path(digest) / owner

    def _meta_path(self, digest: str) -> Path:
        return self.folder / ".meta" / f"{digest}.json"

    def _existing(self, digest: str) -> Asset | None:
        """The stored asset with these bytes, marked as used: storing them again is a use."""
        try:
            return self.use(digest)
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

    def _add_bytes(
        self, data: bytes, filename: str | None, owner: str | None
    ) -> tuple[Asset, bool]:
        digest = hashlib.sha256(data).hexdigest()
        existing = self._existing(digest)
        if existing is not None:
            return self._own(existing, False, owner, filename)
        out, temp = self._temp()
        try:
            out.write(data)
        except BaseException:
            out.close()
            temp.unlink(missing_ok=True)
            raise
        head = data[:SNIFF_BYTES]
        return self._finish(out, temp, digest, head, len(data), filename, owner)

    def _finish(
        self,
        out: IO[bytes],
        temp: Path,
        digest: str,
        head: bytes,
        size: int,
        filename: str | None,
        owner: str | None,
    ) -> tuple[Asset, bool]:
        """Flush and fsync the temp file, then move it into place (or drop it: a duplicate)."""
        try:
            with out:
                _sync(out)
            asset, created = self._commit(temp, digest, head, size, filename)
            return self._own(asset, created, owner, filename)
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
