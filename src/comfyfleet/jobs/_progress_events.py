"""What ComfyUI says while a prompt runs, as the job's events: started, cached (the nodes
ComfyUI took from its cache), progress, executing, executed.

These describe moments that pass: one the store cannot take now is dropped, not the attempt.
After a failure the next `quiet_s` of them are not even tried, so a store that hangs (a cut
link) does not hold the lane's follower back from the prompt's end, which must be reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from comfyfleet.comfy import ComfyMessage
from comfyfleet.jobs._flight import InFlight
from comfyfleet.jobs._progress import JobProgress
from comfyfleet.jobs._reports import unreachable
from comfyfleet.jobs._store import JobStore

log = logging.getLogger("comfyfleet.jobs")


class ProgressEvents:
    """Turns one instance's progress messages into its jobs' events."""

    def __init__(self, store: JobStore, worker: str, instance: int, quiet_s: float = 5.0) -> None:
        self.store = store
        self.worker = worker
        self.instance = instance
        self.quiet_s = quiet_s
        self._quiet_until = float("-inf")

    async def tell(self, flight: InFlight, message: ComfyMessage) -> bool:
        """Record `message` if it is progress of `flight`'s prompt; False for anything else
        (the prompt's end, which the lane handles)."""
        job_id, data = flight.job.id, message.data
        if message.type == "execution_start":
            flight.started_at = time.time()
            started = {"instance": self.instance, "comfy_ts": data.get("timestamp")}
            await self._inform(job_id, lambda: self.store.publish(job_id, "started", started))
        elif message.type == "execution_cached":
            cached = {"nodes": [str(node) for node in data.get("nodes") or []]}
            if cached["nodes"]:
                await self._inform(job_id, lambda: self.store.publish(job_id, "cached", cached))
        elif message.type == "progress":
            await self._progress(job_id, data)
        elif message.type == "executing":
            if data.get("node") is not None:
                executing = {"node": data.get("node")}
                await self._inform(
                    job_id, lambda: self.store.publish(job_id, "executing", executing)
                )
        elif message.type == "executed":
            output = data.get("output")
            if isinstance(output, dict):
                flight.ui_outputs[str(data.get("node"))] = output
            executed = {"node": data.get("node"), "output": output}
            await self._inform(job_id, lambda: self.store.publish(job_id, "executed", executed))
        else:
            return False
        return True

    async def _progress(self, job_id: str, data: dict[str, Any]) -> None:
        progress = JobProgress.of(data.get("node"), data.get("value", 0), data.get("max", 0))
        await self._inform(
            job_id, lambda: self.store.set_running_info(job_id, self.worker, progress=progress)
        )
        stored = progress.to_json()
        await self._inform(job_id, lambda: self.store.publish(job_id, "progress", stored))

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
