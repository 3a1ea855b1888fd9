"""The disk side of one download: `<name>.part`, its state file, its hasher, and the commit.

Writers call :meth:`PartFile.write` from any thread with bytes fetched at some offset: the bytes
go to disk (`pwrite`), to the in-order hasher, and into the list of good ranges; every
`checkpoint_bytes` the state file is replaced (after the data it lists was written), so a killed
process refetches at most that much. A killed process loses nothing it wrote (the page cache
outlives it), so the data is fsynced before a state write only with `fsync_checkpoints`; after a
power cut without it, the sha256 check at the end catches bytes the state claimed but lost.
:meth:`commit` checks size, sha256 and any git blob id expected, and renames the file to its
final name, the only way a file ever gets that name.

Whole chunks from the hasher's pool (page-aligned, at aligned offsets) are written with O_DIRECT
where the filesystem allows it: the bytes go from the network buffer to the disk without a copy
into the page cache, and the disk works while the network reads, so the fsync before the rename
finds almost nothing left to write. Anything else (a file's tail, a resume at an odd offset, the
bytes of a non-HTTP source) goes through the page cache as usual.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import threading
from pathlib import Path

from comfyfleet.models._errors import ChecksumMismatch, InsufficientSpace, SizeMismatch
from comfyfleet.models._expected import Expected, git_blob_id
from comfyfleet.models._hashing import Chunk, OrderedHasher
from comfyfleet.models._progress import human_size
from comfyfleet.models._ranges import RangeSet
from comfyfleet.models._settings import ModelSettings
from comfyfleet.models._state import (
    PartState,
    discard_partial,
    fsync_dir,
    part_path,
    save_state,
    state_path,
)


def check_room(path: Path, total: int, settings: ModelSettings, label: str) -> int:
    """Fail before a download that would not fit: `path` growing to `total` bytes must leave
    `free_space_margin_bytes` free. Returns the bytes the file still needs."""
    needed = max(0, total - _allocated_bytes(path))
    folder = path.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = settings.free_space_margin_bytes
    if needed + margin > free:
        raise InsufficientSpace(
            f"{label}: needs {human_size(needed)} but {folder} has {human_size(free)} free"
            f" (keeping {human_size(margin)} spare)",
            hint="free some space, or point models_root at a bigger disk",
        )
    return needed


def _allocated_bytes(path: Path) -> int:
    """Bytes the file already occupies on disk (a preallocated partial file needs no more)."""
    try:
        stat = path.stat()
    except OSError:
        return 0
    return min(stat.st_size, getattr(stat, "st_blocks", 0) * 512)


_ALIGN = 4096
"""O_DIRECT wants offsets, lengths and buffer addresses aligned to the device's logical block
size; 4096 is a multiple of every common one."""


def _open_direct(path: Path) -> int | None:
    """A second descriptor of `path` with O_DIRECT, or None where the platform or filesystem has
    none (macOS, tmpfs, some FUSE and network filesystems)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return None


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)


class PartFile:
    """`<final>.part` open for writing, with its state and hasher."""

    def __init__(self, final: Path, state: PartState, settings: ModelSettings, label: str):
        self.final = final
        self.path = part_path(final)
        self.state = state
        self.settings = settings
        self.label = label
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._since_checkpoint = 0
        self.fetched = 0
        self.direct_bytes = 0
        """Bytes written with O_DIRECT (the rest went through the page cache)."""
        self.done = state.ranges.total
        final.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._direct_fd = _open_direct(self.path) if settings.direct_io else None
        self._direct_ok = self._direct_fd is not None
        self.hasher = self._new_hasher()

    def _new_hasher(self) -> OrderedHasher:
        hasher = OrderedHasher(
            self.fd,
            on_disk=self.state.ranges,
            buffer_limit=self.settings.hash_buffer_bytes,
            chunk_bytes=self.settings.chunk_bytes,
        )
        hasher.start()
        return hasher

    def prepare(self, total: int | None) -> None:
        """Check free space and reserve the file's blocks, so a full disk fails now."""
        if total is None:
            return
        needed = check_room(self.path, total, self.settings, self.label)
        if self.settings.preallocate and needed:
            try:
                os.posix_fallocate(self.fd, 0, total)
                return
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise InsufficientSpace(
                        f"{self.label}: no space for {human_size(total)} in {self.final.parent}",
                        hint="free some space, or point models_root at a bigger disk",
                    ) from exc
        if os.fstat(self.fd).st_size < total:
            os.ftruncate(self.fd, total)

    def restart(self, total: int | None, etag: str | None, last_modified: str | None) -> None:
        """Forget every byte (a server that cannot resume sends the file from its start)."""
        self.hasher.abort()
        with self._lock:
            self.state = PartState(self.state.url, total, etag, last_modified, RangeSet())
            self.done = 0
        os.ftruncate(self.fd, 0)
        self.hasher = self._new_hasher()
        save_state(self.final, self.state)

    def write(self, offset: int, buffer: Chunk, length: int) -> None:
        """Store fetched bytes (any thread). `buffer` then belongs to the hasher."""
        view = memoryview(buffer)[:length]
        try:
            self._store(offset, view, isinstance(buffer, mmap.mmap))
        finally:
            view.release()
        self.hasher.feed(offset, buffer, length)
        with self._lock:
            self.state.ranges.add(offset, offset + length)
            self.done += length
            self.fetched += length
            self._since_checkpoint += length
            due = self._since_checkpoint >= self.settings.checkpoint_bytes
            if due:
                self._since_checkpoint = 0
        if due:
            self.checkpoint()

    def _store(self, offset: int, view: memoryview, aligned_buffer: bool) -> None:
        direct = self._direct_fd
        if (
            direct is not None
            and self._direct_ok
            and aligned_buffer
            and offset % _ALIGN == 0
            and len(view) % _ALIGN == 0
        ):
            try:
                _pwrite_all(direct, view, offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct_ok = False  # opened, but refused for I/O: the page cache it is
            else:
                with self._lock:
                    self.direct_bytes += len(view)
                return
        _pwrite_all(self.fd, view, offset)

    def _close(self) -> None:
        os.close(self.fd)
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None

    def checkpoint(self) -> None:
        """Make the bytes listed so far durable, then list them in the state file."""
        with self._checkpoint_lock:
            with self._lock:
                state = self.state
                snapshot = PartState(
                    state.url, state.total, state.etag, state.last_modified, RangeSet(state.ranges)
                )
            if self.settings.fsync_checkpoints:
                os.fsync(self.fd)
            save_state(self.final, snapshot, sync=self.settings.fsync_checkpoints)

    def abandon(self) -> None:
        """After a failure or cancel: keep what is good for the next try, close everything."""
        self.hasher.abort()
        try:
            self.checkpoint()
        finally:
            self._close()

    def commit(self, size: int, expected: Expected) -> str:
        """Finish hashing, verify, and give the file its final name; returns the sha256."""
        blob = None
        try:
            digest = self.hasher.finish(size)
            os.ftruncate(self.fd, size)
            if expected.git_blob is not None and expected.size in (None, size):
                blob = git_blob_id(self.fd, size)
            if self.settings.fsync_commit:
                os.fsync(self.fd)  # the inode's: it covers the O_DIRECT writes' metadata too
        finally:
            self._close()
        url = self.state.url
        if expected.size is not None and size != expected.size:
            discard_partial(self.final)
            raise SizeMismatch(
                f"{self.label}: got {size} bytes, the manifest says {expected.size}",
                hint="fix the manifest's size, or check the source",
                url=url,
            )
        if expected.sha256 is not None and digest != expected.sha256.lower():
            discard_partial(self.final)
            raise ChecksumMismatch(self.label, expected.sha256.lower(), digest, url)
        if expected.git_blob is not None and blob != expected.git_blob.lower():
            discard_partial(self.final)
            raise ChecksumMismatch(
                self.label, expected.git_blob.lower(), str(blob), url, algorithm="git blob id"
            )
        os.replace(self.path, self.final)
        state_path(self.final).unlink(missing_ok=True)
        if self.settings.fsync_commit:
            fsync_dir(self.final.parent)
        return digest
