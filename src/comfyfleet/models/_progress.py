"""Download progress as data: what a CLI bar, a job event or a dashboard row shows.

The downloader reports a :class:`DownloadProgress` every `progress_interval_s` per file, and
once more when the file is done. A callback may be plain or async; the gateway's caller turns
each report into a job event, the CLI into a rich bar. :func:`human_size` writes byte counts the
same way everywhere (CLI tables, error messages).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

log = logging.getLogger("comfyfleet.models")

Phase = Literal["starting", "downloading", "verifying", "done", "skipped", "failed"]


@dataclass(frozen=True)
class DownloadProgress:
    """One file's progress. `total` is None while the server has not said the size."""

    file: str
    done: int
    total: int | None
    speed_bps: float
    eta_s: float | None
    phase: Phase = "downloading"
    message: str | None = None
    """A note worth showing once, e.g. that the server cannot resume and the file restarts."""

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def human_size(size: float) -> str:
    """`size` bytes for people: `512 B`, `1.5 KiB` ... `2.0 TiB`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


ProgressCallback = Callable[[DownloadProgress], Awaitable[None] | None]


async def report(callback: ProgressCallback | None, progress: DownloadProgress) -> None:
    """Call a plain or async callback; a failing callback is logged, never fatal."""
    if callback is None:
        return
    try:
        result = callback(progress)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("progress callback failed for %s", progress.file)


class Meter:
    """Speed over a sliding window of recent samples, and the ETA it implies."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, done: int) -> float:
        now = self._clock()
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[0][0] > self.window_s:
            samples.popleft()
        first_t, first_done = samples[0]
        elapsed = now - first_t
        return (done - first_done) / elapsed if elapsed > 0 else 0.0

    def progress(
        self, file: str, done: int, total: int | None, phase: Phase = "downloading"
    ) -> DownloadProgress:
        speed = self.sample(done)
        eta = (total - done) / speed if total is not None and speed > 0 else None
        return DownloadProgress(file, done, total, speed, eta, phase)
