"""A value read off the request path: at most one read at a time, reused while it is fresh.

A scrape that finds the value older than `max_age_s` starts a read (or joins the one under way)
and waits for it at most `wait_s`; then it answers with whatever value is there, fresh or not.
So however many scrapers come, the store sees one read per `max_age_s`, and a store that hangs
makes a scrape late by `wait_s` at most while every other request goes on: nothing here waits
on the store except the read's own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("comfyfleet.metrics")


class Snapshot(Generic[T]):
    def __init__(
        self,
        name: str,
        read: Callable[[], Awaitable[T]],
        initial: T,
        *,
        max_age_s: float,
        wait_s: float,
    ) -> None:
        self.name = name
        self._read = read
        self.value = initial
        self.max_age_s = max_age_s
        self.wait_s = wait_s
        self.read_at: float | None = None
        """Monotonic time of the last read that succeeded (None: none yet)."""
        self.reads = 0
        self.failures = 0
        self._reading: asyncio.Task[None] | None = None

    def age_s(self) -> float | None:
        return None if self.read_at is None else time.monotonic() - self.read_at

    async def fresh(self) -> T:
        """The value, read again first if it is stale (waiting `wait_s` at most)."""
        age = self.age_s()
        if age is not None and age < self.max_age_s:
            return self.value
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._refresh())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.wait_s):
                await asyncio.shield(self._reading)
        return self.value

    async def _refresh(self) -> None:
        try:
            self.reads += 1
            self.value = await self._read()
            self.read_at = time.monotonic()
        except Exception as exc:  # the last value stays; the next scrape tries again
            self.failures += 1
            log.warning("reading %s for /metrics failed: %s", self.name, exc)
        finally:
            self._reading = None

    async def close(self) -> None:
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
