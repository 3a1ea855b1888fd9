"""Pruning now and then inside `serve`, `gateway` and `agent`, and once by hand (`comfyfleet gc`).

Who prunes what, so that two processes never race:
- The store's records (jobs, events, deliveries, preview frames) are the whole deployment's:
  the process holding the store's `retention` lease prunes them, one at a time however many
  gateways and agents share the store. The lease is taken for one run and given up after it.
- Files are each machine's own (inputs where the gateway stored them, outputs where ComfyUI
  wrote them): every process prunes its workspace's folders, under an exclusive lock on
  `state/retention.lock`, so processes sharing a workspace take turns.
A process that gets neither skips the run. `comfyfleet gc` takes the same two, waiting a little
for a run in progress to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from comfyfleet.errors import ComfyfleetError
from comfyfleet.jobs import Registry
from comfyfleet.retention._pruner import Pruner
from comfyfleet.retention._report import Report

log = logging.getLogger("comfyfleet.retention")

LEASE = "retention"
LEASE_TTL_S = 900.0
"""A run that takes longer may find another process pruning the records too: harmless (every
delete is decided by the store again), only wasted work."""


class PruneBusy(ComfyfleetError):
    """Another process is pruning the same store or workspace right now."""


@dataclass
class RetentionTask:
    pruner: Pruner
    registry: Registry
    holder: str
    """Who holds the lease while pruning (the agent's or the process's id)."""
    lock_file: Path
    interval_s: float
    first_after_s: float = 60.0
    """The first run waits this long (or the interval, if shorter): not during startup."""
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self, *, wait_s: float = 0.0, dry_run: bool = False) -> Report:
        """One prune with whatever this process may prune now. A dry run takes no lock. With
        `wait_s`, wait that long for a prune in progress elsewhere, then raise PruneBusy."""
        if dry_run:
            return await self.pruner.run(dry_run=True)
        async with self._turn(wait_s) as (records, files):
            if not (records or files):
                return self.pruner.nothing()
            return await self.pruner.run(dry_run=False, records=records, files=files)

    @contextlib.asynccontextmanager
    async def _turn(self, wait_s: float) -> AsyncIterator[tuple[bool, bool]]:
        deadline = time.monotonic() + wait_s
        records = files = False
        handle = await asyncio.to_thread(_open_lock, self.lock_file)
        try:
            while True:
                records = records or await self.registry.lead(LEASE, self.holder, ttl_s=LEASE_TTL_S)
                files = files or _try_lock(handle)
                if (records and files) or (wait_s <= 0 and (records or files)):
                    break
                if time.monotonic() >= deadline:
                    if wait_s > 0:
                        raise PruneBusy(
                            "another comfyfleet process is pruning this store or workspace "
                            "right now",
                            hint="try again when it is done (a run takes seconds to minutes)",
                        )
                    break
                await asyncio.sleep(0.25)
            yield records, files
        finally:
            handle.close()  # closing releases the lock
            if records:
                with contextlib.suppress(Exception):
                    await self.registry.resign(LEASE, self.holder)

    async def _run(self) -> None:
        await asyncio.sleep(min(self.first_after_s, self.interval_s))
        while True:
            started = time.monotonic()
            try:
                report = await self.run_once()
                _log(report)
            except Exception as exc:  # the store is away, a folder unreadable: next time
                log.warning("pruning failed: %s", exc)
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))


def _open_lock(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a")


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _log(report: Report) -> None:
    total = report.total
    if total.count:
        kinds = ", ".join(f"{t.count} {k}" for k, t in report.removed.items() if t.count)
        log.info("pruned %s (%d bytes)", kinds, total.bytes)
    for note in report.notes:
        log.warning("retention: %s", note)
