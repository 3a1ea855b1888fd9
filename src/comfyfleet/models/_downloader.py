"""The async face of downloading: concurrency limit, de-duplication, progress, locks.

:class:`Downloader` runs each transfer on its own threads (`_http_transfer` for HTTP sources,
`_stream` for the others) and reports progress from the event loop every `progress_interval_s`.
The same destination asked for twice at once is fetched once; with a `lock_dir`, two processes
(two agents on one machine) never write the same partial file: the second waits for the first
and then finds the file there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from comfyfleet.models._errors import DownloadError, ModelError
from comfyfleet.models._expected import Expected
from comfyfleet.models._hashing import sha256_file
from comfyfleet.models._http_transfer import HttpTransfer
from comfyfleet.models._manifest import ModelFile
from comfyfleet.models._pinning import UrlGuard
from comfyfleet.models._progress import DownloadProgress, Meter, Phase, ProgressCallback, report
from comfyfleet.models._settings import ModelSettings
from comfyfleet.models._sources import resolve_source
from comfyfleet.models._stream import (
    ObjectReader,
    Streamer,
    StreamTransfer,
    local_stat,
    local_streamer,
)
from comfyfleet.models._transfer import Transfer, TransferResult, TransferStats

T = TypeVar("T")
_LOCAL = ObjectReader(local_streamer, local_stat)


@dataclass(frozen=True)
class DownloadItem:
    """One file to fetch: from `source` to the final path `dest`, checked if size/sha256 given."""

    source: str
    dest: Path
    size: int | None = None
    sha256: str | None = None
    label: str | None = None
    git_blob: str | None = None
    """The git blob id, for files kept in plain git that publish no sha256 (see `_expected`)."""
    guard: UrlGuard | None = None
    """For a URL a client chose: the network policy its connections are held to."""

    @classmethod
    def of(cls, file: ModelFile, dest: Path) -> DownloadItem:
        """The download of a manifest's file to `dest`, held to all the manifest says of it."""
        return cls(file.source, dest, file.size, file.sha256, git_blob=file.git_blob)

    @property
    def name(self) -> str:
        return self.label or self.dest.name

    @property
    def expected(self) -> Expected:
        return Expected(self.size, self.sha256, self.git_blob)


@dataclass(frozen=True)
class DownloadResult:
    item: DownloadItem
    path: Path
    size: int
    sha256: str | None
    """None only for a file that was already there (not hashed again)."""
    skipped: bool = False
    seconds: float = 0.0
    fetched_bytes: int = 0
    rehashed_bytes: int = 0
    readback_bytes: int = 0
    direct_bytes: int = 0
    """Bytes written to disk with O_DIRECT, past the page cache."""
    hash_busy_s: float = 0.0
    connections: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)


Verified = Callable[[Path, str], None]
"""Told of every file the downloader verified (path, sha256): the index records the hash."""


class DownloadWatch(Protocol):
    """Told of every transfer's end (metrics); a file already there is no transfer."""

    def downloaded(self, result: DownloadResult) -> None: ...

    def download_failed(self, item: DownloadItem, error: Exception, fetched_bytes: int) -> None:
        """The transfer of `item` failed with `error` after fetching `fetched_bytes`."""
        ...


class Downloader:
    """Fetches :class:`DownloadItem`s; at most `settings.concurrency` files at once."""

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        env: Mapping[str, str] | None = None,
        streamers: Mapping[str, Streamer | ObjectReader] | None = None,
        lock_dir: Path | None = None,
        on_verified: Verified | None = None,
        watch: DownloadWatch | None = None,
    ) -> None:
        self.watch = watch
        self.settings = settings or ModelSettings()
        self.env = dict(os.environ if env is None else env)
        self.readers: dict[str, ObjectReader] = {
            scheme: reader if isinstance(reader, ObjectReader) else ObjectReader(reader)
            for scheme, reader in {"file": _LOCAL, **(streamers or {})}.items()
        }
        self.lock_dir = lock_dir
        self.on_verified = on_verified
        self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        self._inflight: dict[Path, asyncio.Task[DownloadResult]] = {}

    async def download(
        self, item: DownloadItem, on_progress: ProgressCallback | None = None
    ) -> DownloadResult:
        """Fetch one file (or wait for the same fetch already under way)."""
        key = item.dest.absolute()
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._download(item, on_progress))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
            return await task
        return await asyncio.shield(task)

    async def download_all(
        self, items: Iterable[DownloadItem], on_progress: ProgressCallback | None = None
    ) -> list[DownloadResult]:
        """Fetch several files (concurrency-limited); the first failure is raised after the
        others have finished or failed, so no partial file is left half-written."""
        results = await asyncio.gather(
            *(self.download(item, on_progress) for item in items), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, DownloadResult)]

    async def _download(
        self, item: DownloadItem, on_progress: ProgressCallback | None
    ) -> DownloadResult:
        async with self._semaphore:
            existing = _existing(item)
            if existing is not None:
                await report(on_progress, _final(item, existing.size, "skipped"))
                return existing
            transfer: Transfer | None = None
            try:
                transfer = self._transfer(item)
                started = time.monotonic()
                await report(on_progress, _final(item, 0, "starting", item.size))
                result = await self._follow(item, transfer, on_progress)
            except Exception as exc:
                if self.watch is not None:
                    fetched = 0 if transfer is None else transfer.stats.fetched_bytes
                    self.watch.download_failed(item, exc, fetched)
                raise
        if self.on_verified is not None:
            self.on_verified(result.path, result.sha256)
        await report(on_progress, _final(item, result.size, "done"))
        stats = result.stats
        done = DownloadResult(
            item,
            result.path,
            result.size,
            result.sha256,
            seconds=time.monotonic() - started,
            fetched_bytes=stats.fetched_bytes,
            rehashed_bytes=stats.rehashed_bytes,
            readback_bytes=stats.readback_bytes,
            direct_bytes=stats.direct_bytes,
            hash_busy_s=stats.hash_busy_s,
            connections=stats.connections,
            notes=tuple(stats.notes),
        )
        if self.watch is not None:
            self.watch.downloaded(done)
        return done

    def _transfer(self, item: DownloadItem) -> Transfer:
        source = resolve_source(item.source, self.settings, self.env)
        if item.guard is not None:
            if source.kind != "http":
                raise DownloadError(f"{item.source}: a job may only name http(s) model URLs")
            source = dataclasses.replace(source, guard=item.guard)
        if source.kind == "http":
            return HttpTransfer(
                source,
                item.dest,
                self.settings,
                expected=item.expected,
                label=item.name,
            )
        reader = self.readers.get(source.scheme)
        if reader is None:
            raise DownloadError(
                f"{item.name}: no reader for {source.scheme}:// sources in this process",
                hint="build the ModelLibrary from settings that have a `storage` section, or"
                " use an https:// source",
            )
        return StreamTransfer(
            source,
            reader,
            item.dest,
            self.settings,
            expected=item.expected,
            label=item.name,
        )

    async def _follow(
        self,
        item: DownloadItem,
        transfer: Transfer,
        on_progress: ProgressCallback | None,
    ) -> TransferResult:
        done = _in_thread(lambda: self._locked(item, transfer))
        meter = Meter()
        notes = transfer.stats.notes
        shown = 0
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.progress_interval_s):
                        return await asyncio.shield(done)
                progress = meter.progress(item.name, transfer.done, transfer.total)
                if len(notes) > shown:
                    progress = dataclasses.replace(progress, message=notes[-1])
                    shown = len(notes)
                await report(on_progress, progress)
        except asyncio.CancelledError:
            transfer.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.shield(done)
            raise

    def _locked(self, item: DownloadItem, transfer: Transfer) -> TransferResult:
        with self._file_lock(item.dest):
            if item.dest.exists():  # another process finished it while this one waited
                sha = sha256_file(item.dest)  # cheap next to a download, and it must be right
                size = item.dest.stat().st_size
                return TransferResult(item.dest, size, sha, TransferStats())
            return transfer.run()

    @contextlib.contextmanager
    def _file_lock(self, dest: Path) -> Iterator[None]:
        if self.lock_dir is None:
            yield
            return
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(str(dest.absolute()).encode()).hexdigest()[:32]
        with (self.lock_dir / f"{digest}.lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _existing(item: DownloadItem) -> DownloadResult | None:
    try:
        size = item.dest.stat().st_size
    except FileNotFoundError:
        return None
    if item.size is not None and size != item.size:
        raise ModelError(
            f"{item.dest} exists with {size} bytes, but {item.name} should have {item.size}",
            hint="it is another file of the same name: remove it (`comfyfleet models remove`)"
            " or rename it, then install again",
        )
    return DownloadResult(item, item.dest, size, None, skipped=True)


def _final(
    item: DownloadItem, done: int, phase: Phase, total: int | None = None
) -> DownloadProgress:
    return DownloadProgress(item.name, done, total if total is not None else done, 0.0, 0.0, phase)


def _in_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """Run blocking `work` on a new thread; the future resolves on the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]

    def target() -> None:
        try:
            value = work()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=target, name="download", daemon=True).start()
    return future
