"""The threads of one HTTP transfer and what they share: their sessions, the cancel flag, the
first error, and the loop that reads a body into the part file and retries what failed.

A failure after which the cursor moved starts the count of failures in a row again, so a flaky
connection that keeps making progress is never given up on; one that makes none is retried
`retries` times with growing backoff. A cancel, or one thread's lasting error, shuts down every
session's socket, so that reads blocked in other threads return at once.
"""

from __future__ import annotations

import http.client
import logging
import mmap
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from comfyfleet.models._errors import DownloadError
from comfyfleet.models._http import TRANSIENT_ERRORS, HttpSession, Opened
from comfyfleet.models._partfile import PartFile
from comfyfleet.models._settings import ModelSettings
from comfyfleet.models._sources import ResolvedSource
from comfyfleet.models._transfer import Cancelled

log = logging.getLogger("comfyfleet.models")


class Transient(Exception):
    """A failure worth a retry (a connection closed early, a response that cannot be used)."""


RETRY: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, Transient, DownloadError)
"""What :meth:`Fetcher.pull` retries (a DownloadError only where it says `retryable`)."""


@dataclass
class Cursor:
    """Where the good bytes of one body end; it moves with every chunk written."""

    position: int


Reopen = Callable[[int], Opened]
"""`position -> a response` that should carry the file's bytes from `position` on."""
Check = Callable[[Opened, int], None]
"""Raises when a reopened response cannot be read from `position` as it is."""


class Fetcher:
    """Sessions, stop flags and the read/retry loop of one HTTP transfer's threads."""

    def __init__(
        self,
        source: ResolvedSource,
        settings: ModelSettings,
        label: str,
        cancelled: threading.Event,
    ) -> None:
        self.source = source
        self.settings = settings
        self.label = label
        self.cancelled = cancelled
        self._lock = threading.Lock()
        self._sessions: list[HttpSession] = []
        self._error: BaseException | None = None

    # --- sessions -------------------------------------------------------------------------
    def session(self) -> HttpSession:
        """A new session (one per thread) that starts where the first one was redirected to."""
        session = HttpSession(
            self.source, self.settings.connect_timeout_s, self.settings.read_timeout_s
        )
        with self._lock:
            if self._sessions and self._sessions[0].resolved_url:
                session.resolved_url = self._sessions[0].resolved_url
            self._sessions.append(session)
        return session

    def abort(self) -> None:
        """Unblock every session's read in progress (from any thread)."""
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.abort()

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()

    # --- stopping -------------------------------------------------------------------------
    def stopping(self) -> bool:
        return self.cancelled.is_set() or self._error is not None

    def fail(self, exc: BaseException) -> None:
        """A thread's lasting failure: remember the first one and stop the other threads."""
        with self._lock:
            if self._error is None:
                self._error = exc
        self.abort()

    def raise_if_stopped(self) -> None:
        """After the threads ended: the cancel, or the first thread's error, if any."""
        if self.cancelled.is_set():
            raise Cancelled(self.label)
        if self._error is not None:
            raise self._error

    # --- reading --------------------------------------------------------------------------
    def open_first(self, session: HttpSession, headers: Mapping[str, str]) -> Opened:
        """The transfer's first GET, retried like a body read."""
        failures = 0
        while True:
            try:
                return session.get(headers)
            except RETRY as exc:
                failures += 1
                self._recover(session, None, exc, failures)

    def pull(
        self,
        part: PartFile,
        session: HttpSession,
        cursor: Cursor,
        end: int | None,
        opened: Opened | None,
        reopen: Reopen,
        check: Check,
    ) -> Opened:
        """Read from `cursor` to `end` (None: to the end of the body), starting with `opened`
        when given; after a retryable failure, ask again with `reopen(position)` and `check` the
        answer. Returns the response whose body got there."""
        failures = 0
        while True:
            before = cursor.position
            try:
                if opened is None:
                    opened = reopen(cursor.position)
                    check(opened, cursor.position)
                self._read(part, opened, cursor, end)
                return opened
            except RETRY as exc:
                failures = 1 if cursor.position > before else failures + 1
                self._recover(session, opened, exc, failures)
                opened = None

    def _read(self, part: PartFile, opened: Opened, cursor: Cursor, end: int | None) -> None:
        """Read the body into the file from `cursor` to `end`; the cursor moves with every
        chunk, so a failure leaves it where the good bytes end.

        Each chunk is filled whole and ends on a multiple of the chunk size (a resume at an odd
        offset first reads up to the next one), so the part file can write it with O_DIRECT."""
        response = opened.response
        hasher = part.hasher
        while end is None or cursor.position < end:
            position = cursor.position
            if self.stopping():
                raise Cancelled(self.label)
            buffer = hasher.take_buffer()
            size = len(buffer)
            want = size - position % size
            if end is not None:
                want = min(want, end - position)
            if _fill(response, memoryview(buffer)[:want], part, cursor, buffer) < want:
                if end is None:
                    part.state.total = cursor.position
                    return
                raise Transient(f"connection closed at byte {cursor.position} of {end}")

    def _recover(
        self, session: HttpSession, opened: Opened | None, exc: BaseException, failures: int
    ) -> None:
        """Drop the failed response and wait before the next try; raise instead when stopping,
        when the error is lasting, or when `failures` in a row exceed the retries."""
        if self.stopping():
            raise Cancelled(self.label) from exc
        if isinstance(exc, DownloadError) and not exc.retryable:
            raise exc
        if opened is not None:
            session.discard(opened)
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
        if self.cancelled.wait(delay):
            raise Cancelled(self.label) from exc


def _fill(
    response: http.client.HTTPResponse,
    view: memoryview,
    part: PartFile,
    cursor: Cursor,
    buffer: mmap.mmap,
) -> int:
    """Read until `view` is full or the body ends, write what came to `part` at the cursor and
    move it; what came before a failure is written too, so no good byte is fetched twice."""
    filled = 0
    try:
        while filled < len(view):
            n = response.readinto(view[filled:])
            if not n:
                break
            filled += n
    finally:
        view.release()
        if filled:
            part.write(cursor.position, buffer, filled)
            cursor.position += filled
    return filled
