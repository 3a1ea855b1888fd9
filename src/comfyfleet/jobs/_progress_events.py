"""What ComfyUI says while a prompt runs, as the job's events: started, cached (the nodes
ComfyUI took from its cache), progress, executing, executed.

These describe moments that pass: one the store cannot take now is dropped, not the attempt.
After a failure the next `quiet_s` of them are not even tried, so a store that hangs (a cut
link) does not hold the lane's follower back from the prompt's end, which must be reported.

They are stored in batches: what arrives within `window_s` goes in one transaction (a short
graph sends five or more of them in a few milliseconds, and each commit woke every waiter of
the job). The lane flushes the batch before it reports the attempt's end, so a job's events
stay in the order ComfyUI sent them, its end last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from comfyfleet.comfy import ComfyMessage
from comfyfleet.jobs._flight import InFlight
from comfyfleet.jobs._progress import JobProgress
from comfyfleet.jobs._reports import unreachable
from comfyfleet.jobs._store import JobStore, Publication, publish_all

log = logging.getLogger("comfyfleet.jobs")

_MOST = 200
"""Events stored in one transaction at most."""


class ProgressEvents:
    """Turns one instance's progress messages into its jobs' events."""

    def __init__(
        self,
        store: JobStore,
        worker: str,
        instance: int,
        quiet_s: float = 5.0,
        window_s: float = 0.01,
    ) -> None:
        self.store = store
        self.worker = worker
        self.instance = instance
        self.quiet_s = quiet_s
        self.window_s = window_s
        self._quiet_until = float("-inf")
        self._batch: list[Publication] = []
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()  # batches reach the store in the order they were made
        self.tasks: set[asyncio.Task[None]] = set()
        """Flushes started by the window's timer."""

    async def tell(self, flight: InFlight, message: ComfyMessage) -> bool:
        """Record `message` if it is progress of `flight`'s prompt; False for anything else
        (the prompt's end, which the lane handles)."""
        job_id, data = flight.job.id, message.data
        if message.type == "execution_start":
            flight.started_at = time.time()
            self._add(
                job_id, "started", {"instance": self.instance, "comfy_ts": data.get("timestamp")}
            )
        elif message.type == "execution_cached":
            cached = {"nodes": [str(node) for node in data.get("nodes") or []]}
            if cached["nodes"]:
                self._add(job_id, "cached", cached)
        elif message.type == "progress":
            await self._progress(job_id, data)
        elif message.type == "executing":
            if data.get("node") is not None:
                self._add(job_id, "executing", {"node": data.get("node")})
        elif message.type == "executed":
            output = data.get("output")
            if isinstance(output, dict):
                flight.ui_outputs[str(data.get("node"))] = output
            self._add(job_id, "executed", {"node": data.get("node"), "output": output})
        else:
            return False
        return True

    async def _progress(self, job_id: str, data: dict[str, Any]) -> None:
        progress = JobProgress.of(data.get("node"), data.get("value", 0), data.get("max", 0))
        await self._inform(
            job_id, lambda: self.store.set_running_info(job_id, self.worker, progress=progress)
        )
        self._add(job_id, "progress", progress.to_json())

    def _add(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        if time.monotonic() < self._quiet_until:
            return
        self._batch.append((job_id, kind, data))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.create_task(self.flush())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def flush(self) -> None:
        """Store what the window gathered so far (and what an earlier flush is storing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            batch, self._batch = self._batch, []
            # A graph of thousands of nodes sends thousands of messages within one window: they
            # go in transactions of at most _MOST events, the loop serving others in between.
            for start in range(0, len(batch), _MOST):
                if start:
                    await asyncio.sleep(0)
                await self._store(batch[start : start + _MOST])

    async def _store(self, part: list[Publication]) -> None:
        try:
            await self._inform(part[0][0], lambda: publish_all(self.store, part))
        except Exception:  # moments that pass: not worth the attempt
            log.exception("job %s: storing progress events failed", part[0][0])

    async def _inform(self, job_id: str, telling: Callable[[], Awaitable[object]]) -> None:
        if time.monotonic() < self._quiet_until:
            return
        try:
            await telling()
        except Exception as exc:
            if not unreachable(exc):
                raise
            self._quiet_until = time.monotonic() + self.quiet_s
            log.warning("job %s: the store did not take its progress (%s)", job_id, exc)
