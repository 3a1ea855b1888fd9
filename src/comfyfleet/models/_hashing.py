"""sha256 while streaming, in file order, whatever order the segments arrive in.

One hasher thread per file takes the chunks the workers wrote (offset + buffer). A chunk at the
hash front is hashed at once; a chunk ahead of it waits in memory, up to `buffer_limit` bytes;
past that it is dropped (it is on disk) and read back from disk when the front reaches it. So a
download reads its file a second time only for what could not be buffered (`readback_bytes`,
what the benchmark reports as hashing cost), plus, after a restart, the bytes already on disk
(`rehashed_bytes`): a killed process loses its hash state, and rebuilding it needs one read of
the partial file.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import queue
import threading
import time

from comfyfleet.models._ranges import RangeSet

_READ = 4 * 1024 * 1024
_STOP = (-1, b"", 0)

Chunk = bytearray | bytes | mmap.mmap
"""Bytes handed to the hasher; the pool's own buffers are page-aligned anonymous maps, so that
the part file can write them with O_DIRECT (see `_partfile`)."""


def sha256_file(path: os.PathLike[str] | str, chunk: int = _READ) -> str:
    """The sha256 of a whole file, read once."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(chunk)
        view = memoryview(buffer)
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


class OrderedHasher:
    """Feeds sha256 in file order from chunks written out of order (see the module doc)."""

    def __init__(
        self,
        fd: int,
        *,
        on_disk: RangeSet | None = None,
        buffer_limit: int = 128 * 1024 * 1024,
        chunk_bytes: int = 1024 * 1024,
        queue_items: int = 16,
    ) -> None:
        self._fd = fd
        self._digest = hashlib.sha256()
        self.position = 0
        self._written = RangeSet(on_disk or ())
        self._pending: dict[int, memoryview] = {}
        self._pending_bytes = 0
        self._owners: dict[int, mmap.mmap] = {}
        self.buffer_limit = buffer_limit
        self.chunk_bytes = chunk_bytes
        self._queue: queue.Queue[tuple[int, Chunk, int]] = queue.Queue(queue_items)
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.rehashed_bytes = 0
        self.readback_bytes = 0
        self.busy_s = 0.0
        """Seconds the hasher thread spent hashing or reading back."""

    # --- the workers' side -----------------------------------------------------------------
    def take_buffer(self) -> mmap.mmap:
        """A page-aligned buffer of `chunk_bytes` to read into and then hand over with
        :meth:`feed`; buffers come back to a pool once hashed."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return mmap.mmap(-1, self.chunk_bytes)

    def feed(self, offset: int, buffer: Chunk, length: int) -> None:
        """Hand over `buffer[:length]`, already written at `offset` (blocks when far behind)."""
        if self._error is not None:
            raise self._error
        self._queue.put((offset, buffer, length))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def finish(self, size: int) -> str:
        """Wait for every chunk, hash what is left on disk up to `size`, return the hex digest."""
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        if self.position != size:
            raise RuntimeError(f"hashed {self.position} bytes of {size}: bytes are missing")
        return self._digest.hexdigest()

    def abort(self) -> None:
        """Stop the thread without a digest (the download failed or was cancelled)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    # --- the hasher thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            started = time.perf_counter()
            self._advance(resuming=True)
            self.busy_s += time.perf_counter() - started
            while True:
                offset, buffer, length = self._queue.get()
                if offset < 0:
                    break
                started = time.perf_counter()
                self._take(offset, buffer, length)
                self._advance()
                self.busy_s += time.perf_counter() - started
        except BaseException as exc:  # reported by feed() and finish()
            self._error = exc
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                offset, _, _ = self._queue.get_nowait()
            except queue.Empty:
                return
            if offset < 0:
                return

    def _take(self, offset: int, buffer: Chunk, length: int) -> None:
        self._written.add(offset, offset + length)
        view = memoryview(buffer)[:length]
        if offset <= self.position < offset + length:
            self._digest.update(view[self.position - offset :])
            self.position = offset + length
            view.release()
            self._release(buffer)
        elif offset > self.position and self._pending_bytes + length <= self.buffer_limit:
            self._pending[offset] = view
            self._pending_bytes += length
            if isinstance(buffer, mmap.mmap):
                self._owners[offset] = buffer
        else:  # behind the front (a duplicate) or no room: it is on disk anyway
            view.release()
            self._release(buffer)

    def _release(self, buffer: Chunk) -> None:
        if isinstance(buffer, mmap.mmap) and len(buffer) == self.chunk_bytes:
            self._free.put(buffer)

    def _advance(self, resuming: bool = False) -> None:
        while True:
            view = self._pending.pop(self.position, None)
            if view is not None:
                owner = self._owners.pop(self.position, None)
                self._pending_bytes -= len(view)
                self._digest.update(view)
                self.position += len(view)
                view.release()
                if owner is not None:
                    self._release(owner)
                continue
            end = self._written.run_end(self.position)
            if end <= self.position:
                return
            ahead = [offset for offset in self._pending if offset > self.position]
            stop = min([end, *ahead])
            read = self._read_back(self.position, stop)
            if resuming:
                self.rehashed_bytes += read
            else:
                self.readback_bytes += read

    def _read_back(self, start: int, stop: int) -> int:
        position = start
        while position < stop:
            data = os.pread(self._fd, min(_READ, stop - position), position)
            if not data:
                raise RuntimeError(f"partial file ends at {position}, expected {stop}")
            self._digest.update(data)
            position += len(data)
        self.position = stop
        return stop - start
