"""Preview frames into the registry, so that a gateway in another process can show them.

The lane hands every frame to a sink on the event loop's thread, several a second per job. This
writer keeps the newest frame of each job and stores those every `interval_s` from one task: at
most one write per running job per interval however fast ComfyUI sends, a frame replaced before
its turn is simply not stored (a preview is only worth its newest version), and a store that is
slow or down delays previews, never the lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from comfyfleet.jobs._fleet import Registry, StoredFrame

log = logging.getLogger("comfyfleet.jobs")


class PreviewWriter:
    def __init__(self, registry: Registry, worker: str, *, interval_s: float = 0.25) -> None:
        self._registry = registry
        self._worker = worker
        self._interval_s = interval_s
        self._pending: dict[str, StoredFrame] = {}
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    def publish(self, job_id: str, image_format: str, data: bytes) -> None:
        """The lane's preview sink: never blocks, never raises."""
        self._seq += 1
        self._pending[job_id] = StoredFrame(
            job_id, self._worker, self._seq, image_format, bytes(data), time.time()
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def flush(self) -> None:
        frames, self._pending = self._pending, {}
        for frame in frames.values():
            await self._registry.put_preview(frame)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception as exc:  # the store is away: these frames are stale by the next
                log.warning("storing preview frames failed: %s", exc)
