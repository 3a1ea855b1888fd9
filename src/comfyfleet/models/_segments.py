"""The ranged path: a file's missing ranges cut into segments, fetched over up to `connections`
connections at once.

Files of at least `parallel_min_bytes` get several connections, smaller ones one. The segments
are taken in file order, so that the in-order hasher rarely waits and rarely reads back from
disk. The first segment goes with the response that proved the server takes ranges (its bytes
are not asked for twice); each other worker starts with the next segment, then takes whichever
is left first. One worker's lasting failure stops the others, and is raised once all have ended.
"""

from __future__ import annotations

import threading
from collections import deque

from comfyfleet.models._errors import DownloadError
from comfyfleet.models._fetcher import Cursor, Fetcher, Transient
from comfyfleet.models._http import HttpSession, Opened
from comfyfleet.models._partfile import PartFile
from comfyfleet.models._ranges import RangeSet

Piece = tuple[int, int]
"""[start, end) of one segment."""


def plan_pieces(on_disk: RangeSet, total: int, step: int) -> deque[Piece]:
    """The bytes of [0, total) not on disk, in file order, cut every `step` bytes."""
    return deque(
        (at, min(gap_end, at + step))
        for gap_start, gap_end in on_disk.missing(total)
        for at in range(gap_start, gap_end, step)
    )


def fetch_segments(fetcher: Fetcher, part: PartFile, session: HttpSession, opened: Opened) -> int:
    """Fetch every missing byte of `part`; `opened` answers the first missing segment. Returns
    the number of connections used."""
    total = part.state.total
    assert total is not None
    settings = fetcher.settings
    part.prepare(total)
    pieces = plan_pieces(part.state.ranges, total, settings.segment_bytes)
    if not pieces:
        return 1
    parallel = total >= settings.parallel_min_bytes
    count = min(settings.connections if parallel else 1, len(pieces))
    starts: list[tuple[HttpSession, Piece, Opened | None]] = [(session, pieces.popleft(), opened)]
    starts += [(fetcher.session(), pieces.popleft(), None) for _ in range(count - 1)]
    workers = [
        threading.Thread(
            target=_worker,
            args=(fetcher, part, pieces, *start),
            name=f"segment-{i}",
            daemon=True,
        )
        for i, start in enumerate(starts)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    fetcher.raise_if_stopped()
    return count


def _worker(
    fetcher: Fetcher,
    part: PartFile,
    pieces: deque[Piece],
    session: HttpSession,
    piece: Piece,
    opened: Opened | None,
) -> None:
    try:
        while not fetcher.stopping():
            _fetch_piece(fetcher, part, session, piece, opened)
            opened = None
            try:
                piece = pieces.popleft()  # a deque's pops are atomic: no lock needed
            except IndexError:
                return
    except BaseException as exc:
        fetcher.fail(exc)


def _fetch_piece(
    fetcher: Fetcher, part: PartFile, session: HttpSession, piece: Piece, opened: Opened | None
) -> None:
    start, end = piece

    def reopen(position: int) -> Opened:
        return session.get({"Range": f"bytes={position}-{end - 1}"})

    def check(answer: Opened, position: int) -> None:
        found = answer.content_range
        if answer.status != 206 or found is None or found[0] != position:
            raise Transient(f"asked for bytes from {position}, got HTTP {answer.status}")
        if part.state.changed(answer.etag, answer.last_modified):
            raise DownloadError(
                f"{fetcher.label}: the file changed on the server during the download; run"
                " again to restart it",
                retryable=True,
            )

    last = fetcher.pull(part, session, Cursor(start), end, opened, reopen, check)
    if (last.content_range or (0, 0))[1] > end:
        session.discard(last)  # it sent more than this piece: drop the rest
