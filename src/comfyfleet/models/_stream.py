"""Fetching one file from a non-HTTP source (a local path, or s3:// and az:// through a reader).

A streamer is a plain callable `(url, offset) -> Iterator[bytes]` that yields the file's bytes
from `offset` on; it runs on a worker thread. An :class:`ObjectReader` pairs one with a way to
tell the bytes' version and size (an object store's ETag; a local file's size and mtime).
The local reader is built in; s3:// and az:// (and any other scheme) come from whoever builds the
:class:`Downloader` (`_objects`, over comfyfleet.storage). Resume works from the contiguous
prefix already on disk, unless the version changed; verification and the atomic rename are the
same as HTTP's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from comfyfleet.models._errors import DownloadError, SourceNotFound
from comfyfleet.models._expected import Expected
from comfyfleet.models._partfile import PartFile
from comfyfleet.models._ranges import RangeSet
from comfyfleet.models._settings import ModelSettings
from comfyfleet.models._sources import ResolvedSource
from comfyfleet.models._state import PartState, discard_partial, load_state
from comfyfleet.models._transfer import Cancelled, Transfer, TransferResult

Streamer = Callable[[str, int], Iterator[bytes]]
"""`(url, offset) -> chunks of the file from offset on` (called on a worker thread)."""


@dataclass(frozen=True)
class SourceStat:
    """What a non-HTTP source says of its bytes before they are read."""

    version: str | None = None
    """Changes whenever the bytes do (an object's ETag, a file's size and mtime)."""
    size: int | None = None


@dataclass(frozen=True)
class ObjectReader:
    """A non-HTTP source's reader, and how to tell the version and size of its bytes: partial
    bytes of another version are dropped before a resume (an object replaced in its store), and
    a known size is checked against the free disk before the first byte."""

    stream: Streamer
    stat: Callable[[str], SourceStat] | None = None
    """`url -> SourceStat`, called on a worker thread."""


_LOCAL_CHUNK = 4 * 1024 * 1024


def local_stat(path: str) -> SourceStat:
    """A local file's size and mtime (its version)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError as exc:
        raise SourceNotFound(f"{path}: no such file", url=path) from exc
    return SourceStat(f"{stat.st_size}-{stat.st_mtime_ns}", stat.st_size)


def local_streamer(path: str, offset: int) -> Iterator[bytes]:
    """A local file's bytes from `offset` on."""
    try:
        handle = open(path, "rb", buffering=0)
    except FileNotFoundError as exc:
        raise SourceNotFound(f"{path}: no such file", url=path) from exc
    with handle:
        handle.seek(offset)
        while True:
            data = handle.read(_LOCAL_CHUNK)
            if not data:
                return
            yield data


class StreamTransfer(Transfer):
    """One file from a streamer."""

    def __init__(
        self,
        source: ResolvedSource,
        reader: ObjectReader,
        final: Path,
        settings: ModelSettings,
        *,
        expected: Expected | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(
            source,
            final,
            settings,
            expected=expected,
            label=label,
        )
        self.reader = reader

    def run(self) -> TransferResult:
        stat = self.reader.stat(self.source.url) if self.reader.stat else SourceStat()
        self.total = self.total if self.total is not None else stat.size
        validator = stat.version
        state = load_state(self.final)
        if state is not None and state.url == self.source.url and state.changed(validator, None):
            self.note(f"{self.label}: the source changed since the partial download; restarting")
            state = None
        if state is not None and state.url != self.source.url:
            state = None
        if state is None:
            discard_partial(self.final)
            state = PartState(self.source.url, self.total, validator)
        prefix = state.ranges.prefix()
        state.ranges = RangeSet([(0, prefix)] if prefix else [])
        part = PartFile(self.final, state, self.settings, self.label)
        self.part = part
        position = prefix
        try:
            part.prepare(self.total)
            done = self.total is not None and position >= self.total
            for data in () if done else self.reader.stream(self.source.url, position):
                if self.cancelled.is_set():
                    raise Cancelled(self.label)
                part.write(position, data, len(data))
                position += len(data)
        except OSError as exc:
            part.abandon()
            raise DownloadError(
                f"{self.label}: reading {self.source.source} failed: {exc}",
                hint="run again to resume",
                retryable=True,
                url=self.source.url,
            ) from exc
        except BaseException:
            part.abandon()
            raise
        part.state.total = position
        return self.finish(part)
