"""Terminal output shared by the commands: the console, errors, and the install progress."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

from comfyfleet.errors import ComfyfleetError


def make_console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_error(console: Console, error: ComfyfleetError) -> None:
    console.print(f"[bold red]error:[/] {escape(error.message)}")
    if error.hint:
        console.print(f"  [dim]hint:[/] {escape(error.hint)}")


class RichReporter:
    """Install progress: a spinner with the latest output line per step, a tick when done."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: object | None = None
        self._title = ""
        self._started = 0.0

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self._title, self._started = title, time.monotonic()
        with self.console.status(f"{escape(title)} ...") as status:
            self._status = status
            try:
                yield
            except BaseException:
                self.console.print(f"[red]✗[/] {escape(title)}")
                raise
            finally:
                self._status = None
        seconds = time.monotonic() - self._started
        self.console.print(f"[green]✓[/] {escape(title)} [dim]{seconds:.1f}s[/]")

    def detail(self, text: str) -> None:
        status = self._status
        if status is not None and hasattr(status, "update"):
            elapsed = time.monotonic() - self._started
            short = text.strip()[:90]
            status.update(f"{escape(self._title)} [dim]{elapsed:.0f}s  {escape(short)}[/]")

    def info(self, text: str) -> None:
        self.console.print(f"  [dim]{escape(text)}[/]")

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(text)}")
