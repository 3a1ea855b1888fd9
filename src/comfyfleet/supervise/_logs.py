"""Per-instance log files with size-based rotation, and reading them back (tail, follow).

The supervisor owns each instance's stdout and stderr (one pipe) and writes them here, so logs
rotate without the child knowing and survive the child's restarts: `instance-0.log`, then
`instance-0.log.1` ... `.N` for older parts.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO


class RotatingLog:
    """Append-only log file that rolls over at `max_bytes`, keeping `backups` old parts."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO = path.open("ab")
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.write(f"{stamp} [comfyfleet] {text}\n".encode())

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        self._file.close()


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a log (reading the previous part too when the current is short)."""
    parts = [path.with_name(path.name + ".1"), path]
    lines: deque[str] = deque(maxlen=count)
    for part in parts:
        if part.is_file():
            with part.open("r", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    lines.append(line.rstrip("\n"))
    return list(lines)


def follow(path: Path, *, poll: float = 0.2, stop: float | None = None) -> Iterator[str]:
    """Yield lines appended to `path` from now on, across rotations, like `tail -F`.

    A log that does not exist yet is read from its start once it appears. `stop` is a deadline
    (monotonic seconds) after which the iterator ends; None follows until the caller stops.
    """
    reader = _Reader(path, from_end=path.exists())
    try:
        while stop is None or time.monotonic() < stop:
            line = reader.next_line()
            if line is None:
                time.sleep(poll)
            else:
                yield line
    finally:
        reader.close()


class _Reader:
    """The open file behind :func:`follow`, reopened when the log rotates."""

    def __init__(self, path: Path, *, from_end: bool) -> None:
        self.path = path
        self.from_end = from_end
        self.handle: TextIO | None = None
        self.inode = 0

    def next_line(self) -> str | None:
        if self.handle is None:
            if not self.path.exists():
                return None
            self.handle = self.path.open("r", encoding="utf-8", errors="replace")
            self.inode = os.fstat(self.handle.fileno()).st_ino
            if self.from_end:
                self.handle.seek(0, os.SEEK_END)
        line = self.handle.readline()
        if line:
            return line.rstrip("\n")
        try:
            rotated = os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            rotated = True
        if rotated:  # the rest of the old file was read above; the new one starts at 0
            self.close()
            self.from_end = False
        return None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
