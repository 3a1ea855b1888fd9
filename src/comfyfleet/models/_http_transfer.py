"""Fetching one file over HTTP into a :class:`PartFile`: resume, segments, retries.

Runs on plain threads (the async :class:`Downloader` waits for it). The first request asks for
the first missing segment; a 206 proves the server takes ranges, and then the missing ranges are
fetched in segments (`_segments`). A 200 means no ranges: one stream from byte 0, and a retry
after a dropped connection skips the bytes already on disk instead of writing them again. A
partial file whose ETag/Last-Modified no longer match the server's starts again from zero, and
says so.
"""

from __future__ import annotations

from pathlib import Path

from comfyfleet.models._errors import DownloadError, SizeMismatch
from comfyfleet.models._expected import Expected
from comfyfleet.models._fetcher import Cursor, Fetcher, Transient
from comfyfleet.models._http import HttpSession, Opened
from comfyfleet.models._partfile import PartFile, check_room
from comfyfleet.models._segments import fetch_segments
from comfyfleet.models._settings import ModelSettings
from comfyfleet.models._sources import ResolvedSource
from comfyfleet.models._state import PartState, discard_partial, load_state, part_path
from comfyfleet.models._transfer import Transfer, TransferResult

_RESTARTS = 2
"""How often the file may change on the server under one download before it gives up."""


class _RemoteChanged(Exception):
    """The server's file is not the one the partial bytes came from."""


class HttpTransfer(Transfer):
    """One file from one HTTP source."""

    def __init__(
        self,
        source: ResolvedSource,
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
        self.fetcher = Fetcher(source, settings, self.label, self.cancelled)

    def cancel(self) -> None:
        super().cancel()
        self.fetcher.abort()

    # --- the whole file --------------------------------------------------------------------
    def run(self) -> TransferResult:
        if self.expected.size is not None:  # a full disk fails before the first request
            check_room(part_path(self.final), self.expected.size, self.settings, self.label)
        restarts = 0
        while True:
            try:
                return self._attempt(self._load_state())
            except _RemoteChanged as changed:
                restarts += 1
                self.note(str(changed))
                discard_partial(self.final)
                if restarts > _RESTARTS:
                    raise DownloadError(
                        f"{self.label}: the file keeps changing on the server", retryable=True
                    ) from changed

    def _load_state(self) -> PartState | None:
        state = load_state(self.final)
        if state is not None and state.url != self.source.url:
            self.note(f"{self.label}: the partial file came from another URL; starting over")
            state = None
        if state is None:
            discard_partial(self.final)
        return state

    def _attempt(self, state: PartState | None) -> TransferResult:
        if state is not None and state.total is not None and state.ranges.covers(state.total):
            return self.finish(PartFile(self.final, state, self.settings, self.label))
        try:
            part = self._fetch(state)
        finally:
            self.fetcher.close()
        return self.finish(part)

    def _fetch(self, state: PartState | None) -> PartFile:
        """Every missing byte into the part file, by ranges where the server takes them."""
        session = self.fetcher.session()
        start = state.ranges.missing(state.total)[0][0] if state and state.total else 0
        segment_end = start + self.settings.segment_bytes - 1
        opened = self.fetcher.open_first(session, {"Range": f"bytes={start}-{segment_end}"})
        ranged = opened.status == 206 and (opened.content_range or (-1,))[0] == start
        had_bytes = state is not None and state.ranges.total > 0
        if ranged and state is not None:
            self._check_unchanged(state, session, opened)
        else:
            state = PartState(self.source.url, opened.total, opened.etag, opened.last_modified)
        self._check_size(session, opened)
        self.total = opened.total
        part = PartFile(self.final, state, self.settings, self.label)
        self.part = part
        try:
            if ranged:
                self.stats.connections = fetch_segments(self.fetcher, part, session, opened)
            else:
                self._single(part, session, opened, had_bytes)
        except BaseException:
            part.abandon()
            raise
        return part

    def _check_unchanged(self, state: PartState, session: HttpSession, opened: Opened) -> None:
        if state.changed(opened.etag, opened.last_modified) or state.total != opened.total:
            session.discard(opened)
            raise _RemoteChanged(
                f"{self.label}: the file changed on the server (ETag/Last-Modified/size);"
                " restarting from zero"
            )

    def _check_size(self, session: HttpSession, opened: Opened) -> None:
        total = opened.total
        if self.expected.size is not None and total is not None and total != self.expected.size:
            session.discard(opened)
            raise SizeMismatch(
                f"{self.label}: the server's file has {total} bytes, the manifest says"
                f" {self.expected.size}",
                hint="the source changed or the manifest is wrong: check both",
                url=self.source.url,
            )

    # --- one stream, no ranges -------------------------------------------------------------
    def _single(
        self, part: PartFile, session: HttpSession, opened: Opened, had_bytes: bool
    ) -> None:
        if had_bytes:
            self.note(f"{self.label}: the server does not support ranges; restarting from zero")
        part.restart(opened.total, opened.etag, opened.last_modified)
        part.prepare(opened.total)

        def reopen(_position: int) -> Opened:
            return session.get({})

        def check(again: Opened, position: int) -> None:
            if again.etag != part.state.etag and part.state.etag:
                raise _RemoteChanged(f"{self.label}: the file changed on the server")
            self._skip(again, position)

        self.fetcher.pull(part, session, Cursor(0), opened.total, opened, reopen, check)

    def _skip(self, opened: Opened, count: int) -> None:
        if count:
            self.note(f"{self.label}: no range support: fetching again, skipping {count} bytes")
        scratch = bytearray(min(count, self.settings.chunk_bytes) or 1)
        view = memoryview(scratch)
        left = count
        while left > 0:
            n = opened.response.readinto(view[: min(left, len(scratch))])
            if not n:
                raise Transient("connection closed while skipping")
            left -= n
