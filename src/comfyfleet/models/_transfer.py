"""What every transfer of one file shares, whatever its source: the cancel flag, the
`<name>.part` it writes, its statistics, and the commit that verifies the bytes and renames them.

:class:`HttpTransfer` (`_http_transfer`) and :class:`StreamTransfer` (`_stream`) build on
:class:`Transfer`. The :class:`Downloader` runs one on a worker thread and, from the event loop,
reads `done`, `total` and `stats.notes` for its progress reports, or calls :meth:`cancel`.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from comfyfleet.models._expected import Expected
from comfyfleet.models._partfile import PartFile
from comfyfleet.models._settings import ModelSettings
from comfyfleet.models._sources import ResolvedSource

log = logging.getLogger("comfyfleet.models")


class Cancelled(Exception):
    """The transfer was cancelled from outside (its partial file is kept)."""


@dataclass
class TransferStats:
    fetched_bytes: int = 0
    rehashed_bytes: int = 0
    readback_bytes: int = 0
    direct_bytes: int = 0
    hash_busy_s: float = 0.0
    connections: int = 1
    notes: list[str] = field(default_factory=list)
    """Things worth telling the user (a restart from zero, and why), in order."""


@dataclass(frozen=True)
class TransferResult:
    path: Path
    size: int
    sha256: str
    stats: TransferStats


class Transfer(ABC):
    """One file from one source. :meth:`run` blocks; :meth:`cancel` may come from any thread."""

    def __init__(
        self,
        source: ResolvedSource,
        final: Path,
        settings: ModelSettings,
        *,
        expected: Expected | None = None,
        label: str | None = None,
    ) -> None:
        self.source = source
        self.final = final
        self.settings = settings
        self.expected = expected or Expected()
        self.label = label or final.name
        self.cancelled = threading.Event()
        self.part: PartFile | None = None
        self.total: int | None = self.expected.size
        self.stats = TransferStats()

    @property
    def done(self) -> int:
        part = self.part
        return part.done if part is not None else 0

    @abstractmethod
    def run(self) -> TransferResult: ...

    def cancel(self) -> None:
        self.cancelled.set()

    def note(self, text: str) -> None:
        self.stats.notes.append(text)
        log.warning("%s", text)

    def finish(self, part: PartFile) -> TransferResult:
        """Verify and rename the finished part file; the stats say what it cost."""
        self.part = part
        size = part.state.total if part.state.total is not None else part.done
        try:
            digest = part.commit(size, self.expected)
        finally:
            stats = self.stats
            stats.fetched_bytes = part.fetched
            stats.rehashed_bytes = part.hasher.rehashed_bytes
            stats.readback_bytes = part.hasher.readback_bytes
            stats.direct_bytes = part.direct_bytes
            stats.hash_busy_s = part.hasher.busy_s
        return TransferResult(self.final, size, digest, self.stats)
