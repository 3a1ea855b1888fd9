"""How an install tells the user what it is doing.

The installer only talks to a :class:`Reporter`; the CLI's reporter draws rich progress, tests use
:class:`RecordingReporter`. Every line also goes to the install log through :class:`InstallLog`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO


class Reporter(Protocol):
    """Progress sink for long steps."""

    def step(self, title: str) -> AbstractContextManager[None]:
        """Context manager around one long step (used with ``with``)."""
        ...

    def detail(self, text: str) -> None:
        """The latest line of a running step (a pip line, a file being fetched)."""

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None:
        """Something the user must see even when all goes well."""


@dataclass
class RecordingReporter:
    """A reporter that remembers everything, for tests."""

    steps: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.steps.append(title)
        yield

    def detail(self, text: str) -> None:
        self.details.append(text)

    def info(self, text: str) -> None:
        self.infos.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)


class InstallLog:
    """The workspace's `logs/install.log`: every command and every line it printed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO = path.open("a", encoding="utf-8")

    def write(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._file.write(f"{stamp} {line.rstrip()}\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> InstallLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
