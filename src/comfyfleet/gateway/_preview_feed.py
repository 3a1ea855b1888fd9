"""Preview frames from the registry into this gateway's hub, for jobs that run in other
processes.

Only jobs someone watches here are read, every `interval_s`, in one query; each stored frame is
passed on once (it is known by its worker and sequence number) and only while it is fresh. Frames
stored by a worker of this very process are skipped: they reached the hub directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection

from comfyfleet.gateway._previews import PreviewHub
from comfyfleet.jobs import Registry

log = logging.getLogger("comfyfleet.gateway")


class PreviewFeed:
    def __init__(
        self,
        registry: Registry,
        hub: PreviewHub,
        *,
        local_workers: Collection[str] = (),
        interval_s: float = 0.2,
        fresh_s: float = 5.0,
    ) -> None:
        self._registry = registry
        self._hub = hub
        self._local = frozenset(local_workers)
        self._interval_s = interval_s
        self._fresh_s = fresh_s
        self._seen: dict[str, tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def poll(self) -> int:
        """Pass new frames of the watched jobs on; returns how many."""
        watched = self._hub.watched()
        self._seen = {j: s for j, s in self._seen.items() if j in watched}
        if not watched:
            return 0
        frames = await self._registry.previews(watched, since=time.time() - self._fresh_s)
        passed = 0
        for frame in frames:
            key = (frame.worker, frame.seq)
            if frame.worker in self._local or self._seen.get(frame.job_id) == key:
                continue
            self._seen[frame.job_id] = key
            self._hub.publish(frame.job_id, frame.image_format, frame.data)
            passed += 1
        return passed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.poll()
            except Exception as exc:  # the store is away: previews pause, streams go on
                log.warning("reading preview frames failed: %s", exc)
