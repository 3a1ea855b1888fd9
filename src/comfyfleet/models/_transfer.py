"""Fetching one file over HTTP into a :class:`PartFile`: resume, segments, retries.

Runs on plain threads (the async :class:`Downloader` waits for it). The first request asks for
the first missing segment; a 206 proves the server takes ranges, and then the missing ranges are
cut into segments that up to `connections` workers fetch in file order (so the in-order hasher
rarely waits). A 200 means no ranges: one stream from byte 0, and a retry after a dropped
connection skips the bytes already on disk instead of writing them again. A partial file whose
ETag/Last-Modified no longer match the server's starts again from zero, and says so.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.models._errors import DownloadError, SizeMismatch
from comfyfleet.models._http import TRANSIENT_ERRORS, HttpSession, Opened
from comfyfleet.models._partfile import PartFile, allocated_bytes, check_space
from comfyfleet.models._settings import ModelSettings
from comfyfleet.models._sources import ResolvedSource
from comfyfleet.models._state import PartState, discard_partial, load_state, part_path

log = logging.getLogger("comfyfleet.models")


class Cancelled(Exception):
    """The transfer was cancelled from outside (its partial file is kept)."""


class _Transient(Exception):
    """A failure worth a retry (a connection closed early, a response that cannot be used)."""


class _RemoteChanged(Exception):
    """The server's file is not the one the partial bytes came from."""


_RETRY: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, _Transient, DownloadError)


@dataclass
class _Cursor:
    position: int


@dataclass
class TransferStats:
    fetched_bytes: int = 0
    rehashed_bytes: int = 0
    readback_bytes: int = 0
    hash_busy_s: float = 0.0
    requests: int = 0
    connections: int = 1
    ranges: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TransferResult:
    path: Path
    size: int
    sha256: str
    stats: TransferStats


class HttpTransfer:
    """One file from one HTTP source. :meth:`run` blocks; :meth:`cancel` may come from anywhere."""

    def __init__(
        self,
        source: ResolvedSource,
        final: Path,
        settings: ModelSettings,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        label: str | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.final = final
        self.settings = settings
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.label = label or final.name
        self._on_note = on_note
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._sessions: list[HttpSession] = []
        self._error: BaseException | None = None
        self.part: PartFile | None = None
        self.total: int | None = expected_size
        self.stats = TransferStats()

    @property
    def done(self) -> int:
        part = self.part
        return part.done if part is not None else 0

    def cancel(self) -> None:
        self._cancel.set()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.abort()

    def note(self, text: str) -> None:
        self.stats.notes.append(text)
        log.warning("%s", text)
        if self._on_note is not None:
            self._on_note(text)

    # --- the whole file --------------------------------------------------------------------
    def run(self) -> TransferResult:
        if self.expected_size is not None:  # a full disk fails before the first request
            needed = self.expected_size - allocated_bytes(part_path(self.final))
            check_space(
                self.final.parent, needed, self.settings.free_space_margin_bytes, self.label
            )
        restarts = 0
        while True:
            try:
                return self._attempt(self._load_state())
            except _RemoteChanged as changed:
                restarts += 1
                self.note(str(changed))
                discard_partial(self.final)
                if restarts > 2:
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
            return self._finish(PartFile(self.final, state, self.settings, self.label))
        session = self._session()
        start = state.ranges.missing(state.total)[0][0] if state and state.total else 0
        segment_end = start + self.settings.segment_bytes - 1
        opened = self._retrying(lambda: session.get({"Range": f"bytes={start}-{segment_end}"}))
        ranged = opened.status == 206 and (opened.content_range or (-1,))[0] == start
        total = opened.total
        if ranged and state is not None:
            changed = state.changed(opened.etag, opened.last_modified) or state.total != total
            if changed:
                session.discard(opened)
                raise _RemoteChanged(
                    f"{self.label}: the file changed on the server (ETag/Last-Modified/size);"
                    " restarting from zero"
                )
        had_bytes = state is not None and state.ranges.total > 0
        if state is None or not ranged:
            state = PartState(self.source.url, total, opened.etag, opened.last_modified)
        self._check_size(total, session, opened)
        self.total = total
        part = PartFile(self.final, state, self.settings, self.label)
        self.part = part
        try:
            if not ranged:
                self._single(part, session, opened, had_bytes)
            else:
                self._segments(part, session, opened)
        except BaseException:
            self._collect(part)
            part.abandon()
            raise
        finally:
            for held in self._sessions:
                held.close()
        return self._finish(part)

    def _check_size(self, total: int | None, session: HttpSession, opened: Opened) -> None:
        if self.expected_size is not None and total is not None and total != self.expected_size:
            session.discard(opened)
            raise SizeMismatch(
                f"{self.label}: the server's file has {total} bytes, the manifest says"
                f" {self.expected_size}",
                hint="the source changed or the manifest is wrong: check both",
                url=self.source.url,
            )

    def _finish(self, part: PartFile) -> TransferResult:
        self.part = part
        size = part.state.total if part.state.total is not None else part.done
        try:
            digest = part.commit(size, self.expected_size, self.expected_sha256)
        finally:
            self._collect(part)
        return TransferResult(self.final, size, digest, self.stats)

    def _collect(self, part: PartFile) -> None:
        stats = self.stats
        stats.fetched_bytes = part.fetched
        stats.rehashed_bytes = part.hasher.rehashed_bytes
        stats.readback_bytes = part.hasher.readback_bytes
        stats.hash_busy_s = part.hasher.busy_s
        stats.requests = sum(session.requests for session in self._sessions)

    # --- one stream, no ranges -------------------------------------------------------------
    def _single(
        self, part: PartFile, session: HttpSession, opened: Opened, had_bytes: bool
    ) -> None:
        if had_bytes:
            self.note(f"{self.label}: the server does not support ranges; restarting from zero")
        part.restart(opened.total, opened.etag, opened.last_modified)
        part.prepare(opened.total)
        end = opened.total
        cursor, failures = _Cursor(0), 0
        current: Opened | None = opened
        while True:
            before = cursor.position
            try:
                if current is None:
                    current = session.get({})
                    if current.etag != part.state.etag and part.state.etag:
                        raise _RemoteChanged(f"{self.label}: the file changed on the server")
                    self._skip(current, cursor.position)
                self._read(part, current, cursor, end)
                return
            except _RETRY as exc:
                self._after_failure(session, current, exc)
                current = None
                failures = 1 if cursor.position > before else failures + 1
                self._backoff(failures, exc)

    def _skip(self, opened: Opened, count: int) -> None:
        if count:
            self.note(f"{self.label}: no range support: fetching again, skipping {count} bytes")
        scratch = bytearray(min(count, self.settings.chunk_bytes) or 1)
        view = memoryview(scratch)
        left = count
        while left > 0:
            n = opened.response.readinto(view[: min(left, len(scratch))])
            if not n:
                raise _Transient("connection closed while skipping")
            left -= n

    # --- segments ---------------------------------------------------------------------------
    def _segments(self, part: PartFile, session: HttpSession, opened: Opened) -> None:
        total = part.state.total
        assert total is not None
        self.stats.ranges = True
        part.prepare(total)
        step = self.settings.segment_bytes
        pieces: deque[tuple[int, int]] = deque(
            (at, min(gap_end, at + step))
            for gap_start, gap_end in part.state.ranges.missing(total)
            for at in range(gap_start, gap_end, step)
        )
        parallel = total >= self.settings.parallel_min_bytes
        count = min(self.settings.connections if parallel else 1, max(1, len(pieces)))
        self.stats.connections = count
        sessions = [session] + [self._session() for _ in range(count - 1)]
        firsts: list[Opened | None] = [opened] + [None] * (count - 1)
        workers = [
            threading.Thread(
                target=self._worker,
                args=(part, pieces, sessions[i], firsts[i]),
                name=f"segment-{i}",
                daemon=True,
            )
            for i in range(count)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if self._cancel.is_set():
            raise Cancelled(self.label)
        if self._error is not None:
            raise self._error

    def _worker(
        self,
        part: PartFile,
        pieces: deque[tuple[int, int]],
        session: HttpSession,
        opened: Opened | None,
    ) -> None:
        try:
            while not self._cancel.is_set() and self._error is None:
                with self._lock:
                    piece = pieces.popleft() if pieces else None
                if piece is None:
                    return
                self._piece(part, session, piece, opened)
                opened = None
        except BaseException as exc:
            with self._lock:
                if self._error is None:
                    self._error = exc
            self.cancel_others()

    def cancel_others(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.abort()

    def _piece(
        self, part: PartFile, session: HttpSession, piece: tuple[int, int], opened: Opened | None
    ) -> None:
        cursor, end = _Cursor(piece[0]), piece[1]
        failures = 0
        while cursor.position < end:
            before = cursor.position
            try:
                if opened is None:
                    opened = session.get({"Range": f"bytes={cursor.position}-{end - 1}"})
                    self._check_piece(part, opened, cursor.position)
                self._read(part, opened, cursor, end)
                if (opened.content_range or (0, 0))[1] > end:
                    session.discard(opened)  # it sent more than this piece: drop the rest
                opened = None
            except _RETRY as exc:
                self._after_failure(session, opened, exc)
                opened = None
                failures = 1 if cursor.position > before else failures + 1
                self._backoff(failures, exc)

    def _check_piece(self, part: PartFile, opened: Opened, position: int) -> None:
        found = opened.content_range
        if opened.status != 206 or found is None or found[0] != position:
            raise _Transient(f"asked for bytes from {position}, got HTTP {opened.status}")
        if part.state.changed(opened.etag, opened.last_modified):
            raise DownloadError(
                f"{self.label}: the file changed on the server during the download; run again"
                " to restart it",
                retryable=True,
            )

    # --- shared -----------------------------------------------------------------------------
    def _read(self, part: PartFile, opened: Opened, cursor: _Cursor, end: int | None) -> None:
        """Read the body into the file from `cursor` to `end` (None: to the end of the body);
        the cursor moves with every chunk, so a failure leaves it where the good bytes end."""
        response = opened.response
        hasher = part.hasher
        while end is None or cursor.position < end:
            position = cursor.position
            if self._stopping():
                raise Cancelled(self.label)
            buffer = hasher.take_buffer()
            want = len(buffer) if end is None else min(len(buffer), end - position)
            n = response.readinto(memoryview(buffer)[:want])
            if not n:
                if end is None:
                    part.state.total = position
                    return
                raise _Transient(f"connection closed at byte {position} of {end}")
            part.write(position, buffer, n)
            cursor.position = position + n

    def _stopping(self) -> bool:
        return self._cancel.is_set() or self._error is not None

    def _after_failure(
        self, session: HttpSession, opened: Opened | None, exc: BaseException
    ) -> None:
        if self._stopping():
            raise Cancelled(self.label) from exc
        if isinstance(exc, DownloadError) and not exc.retryable:
            raise exc
        if opened is not None:
            session.discard(opened)

    def _backoff(self, failures: int, exc: BaseException) -> None:
        settings = self.settings
        if failures > settings.retries:
            raise DownloadError(
                f"{self.label}: {exc} (gave up after {settings.retries} retries)",
                hint="the network or the server is failing; run the install again to resume",
                retryable=True,
                url=self.source.url,
            ) from exc
        delay = min(settings.backoff_max_s, settings.backoff_initial_s * 2 ** (failures - 1))
        log.info("%s: %s; retry %d in %.1fs", self.label, exc, failures, delay)
        if self._cancel.wait(delay):
            raise Cancelled(self.label) from exc

    def _retrying(self, open_first: Callable[[], Opened]) -> Opened:
        failures = 0
        while True:
            try:
                return open_first()
            except _RETRY as exc:
                self._after_failure(self._sessions[0], None, exc)
                failures += 1
                self._backoff(failures, exc)

    def _session(self) -> HttpSession:
        session = HttpSession(
            self.source, self.settings.connect_timeout_s, self.settings.read_timeout_s
        )
        with self._lock:
            if self._sessions and self._sessions[0].resolved_url:
                session.resolved_url = self._sessions[0].resolved_url
            self._sessions.append(session)
        return session

