"""The stall watchdog: a running job that its instance has said nothing about for too long.

ComfyUI tells what a running prompt does over its WebSocket: the node it executes, progress
steps, outputs. A node that hangs (a deadlocked driver call, a read without a timeout, a custom
node waiting on a lock) says nothing at all, and without a running timeout its job would hold
the instance for ever. Stuck ComfyUI processes are among the most reported failures of every
ComfyUI wrapper, so:

1. A job silent for longer than `stall_s` (and than twice the longest silence it already had,
   so that a node whose steps each take minutes is not taken for stuck) is interrupted, only
   that prompt. If the interrupt takes, its attempt ends as `instance_stalled` (retryable) and
   the instance carries on.
2. If it has not ended `interrupt_grace_s` after the interrupt, it has wedged the instance: the
   lane stops taking jobs, the job's attempt fails as `instance_stalled` (so it runs elsewhere),
   the jobs queued behind it in ComfyUI lose their attempt too, and the instance is restarted
   through the supervisor (`restart`). The lane takes jobs again once the instance is ready
   (see `Dispatcher.on_instance_event`). An instance that cannot be restarted from here (an
   attached server) takes no job until it is idle again.

Each step is logged once and published as the job's `stalled` event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from comfyfleet.comfy import ComfyError
from comfyfleet.jobs._failures import JobError
from comfyfleet.jobs._flight import InFlight, Stall
from comfyfleet.jobs._lane import Lane

log = logging.getLogger("comfyfleet.jobs")

RestartInstance = Callable[[int, str], Awaitable[bool]]
"""Asks for instance `index` to be restarted, saying why; False when it cannot be."""

CADENCE_FACTOR = 2.0
"""A job is stalled only once silent for this many times its longest silence so far."""

ASK_S = 5.0
"""How long a request to a stuck instance may take: a process hung as a whole may not answer."""


@dataclass(frozen=True)
class StallSettings:
    stall_s: float = 300.0
    """No message about a running job for this long: interrupt it."""
    interrupt_grace_s: float = 30.0
    """Still no end this long after the interrupt: restart the instance."""

    @property
    def check_s(self) -> float:
        """How often to look: often enough to act within a quarter of either limit."""
        return min(1.0, self.stall_s / 4, self.interrupt_grace_s / 4)


class StallWatch:
    def __init__(
        self, settings: StallSettings, restart: RestartInstance | None, wake: asyncio.Event
    ) -> None:
        self.settings = settings
        self.restart = restart
        self.wake = wake

    def limit(self, flight: InFlight) -> float:
        return max(self.settings.stall_s, CADENCE_FACTOR * flight.longest_gap)

    async def check(self, lanes: Iterable[Lane], now: float | None = None) -> list[str]:
        """Act on every stalled job of `lanes`; returns the ids of the jobs acted on."""
        now = time.monotonic() if now is None else now
        acted: list[str] = []
        for lane in list(lanes):
            for flight in list(lane.in_flight.values()):
                if flight.stall is None:
                    silent = None if flight.heard_at is None else now - flight.heard_at
                    if flight.started and silent is not None and silent > self.limit(flight):
                        acted.append(flight.job.id)
                        await self._interrupt(lane, flight, silent, now)
                elif now - flight.stall.at > self.settings.interrupt_grace_s:
                    acted.append(flight.job.id)
                    await self._restart(lane, flight, flight.stall)
                    break  # the lane holds nothing any more
        return acted

    async def _interrupt(self, lane: Lane, flight: InFlight, silent: float, now: float) -> None:
        node = flight.node
        node_type = _class_of(flight, node)
        flight.stall = Stall(silent, node, node_type, at=now)
        log.warning(
            "instance %s: job %s made no progress for %.1fs at node %s (%s): interrupting it",
            lane.index,
            flight.job.id,
            silent,
            node,
            node_type,
        )
        data = {"instance": lane.index, "node": node, "node_type": node_type}
        await _publish(lane, flight, data | {"silent_s": round(silent, 1), "action": "interrupt"})
        try:
            async with asyncio.timeout(ASK_S):
                await lane.client.interrupt(flight.prompt_id)
        except (ComfyError, TimeoutError) as exc:  # the grace runs on: then a restart
            log.warning("instance %s: interrupting job %s: %r", lane.index, flight.job.id, exc)

    async def _restart(self, lane: Lane, flight: InFlight, stall: Stall) -> None:
        grace = self.settings.interrupt_grace_s
        reason = (
            f"watchdog: job {flight.job.id} made no progress for {stall.silent_s:.1f}s"
            f" and ignored an interrupt for {grace:g}s"
        )
        # Out of service and out of the lane before any await: nothing more is claimed here,
        # and the follower, which sees the process go, finds no job of ours to end otherwise.
        lane.serving, lane.paused = False, reason
        lane.leave(flight.prompt_id)
        behind = list(lane.in_flight.values())  # queued behind it in ComfyUI: never to start
        for other in behind:
            lane.leave(other.prompt_id)
        await _drop_queued(lane, [other.prompt_id for other in behind])
        restarted = self.restart is not None and await self.restart(lane.index, reason)
        if restarted:
            log.error("instance %s: %s; restarting it", lane.index, reason)
        else:
            log.error(
                "instance %s: %s; it cannot be restarted from here and takes no job "
                "until it is idle",
                lane.index,
                reason,
            )
        action = "restarted" if restarted else "abandoned"
        await _publish(lane, flight, {"instance": lane.index, "action": action})
        await lane.endings.fail(flight.job, stall.error(lane.index, action, grace))
        for other in behind:
            lost = f"instance {lane.index}: taken out of service ({reason})"
            await lane.endings.fail(
                other.job, JobError("instance_lost", lost, True, {"instance": lane.index})
            )
        self.wake.set()


def _class_of(flight: InFlight, node: str | None) -> str | None:
    entry = flight.job.workflow.get(node) if node is not None else None
    kind = entry.get("class_type") if isinstance(entry, dict) else None
    return kind if isinstance(kind, str) else None


async def _publish(lane: Lane, flight: InFlight, data: dict[str, object]) -> None:
    """The job's `stalled` event; best effort: the store being away must not stop the watch."""
    try:
        await lane.progress.flush()  # what it did before it stalled comes first
        await lane.store.publish(flight.job.id, "stalled", data)
    except Exception as exc:
        log.warning("job %s: the store did not take its stalled event (%s)", flight.job.id, exc)


async def _drop_queued(lane: Lane, prompt_ids: list[str]) -> None:
    if not prompt_ids:
        return
    try:
        async with asyncio.timeout(ASK_S):
            await lane.client.delete_queued(prompt_ids)
    except (ComfyError, TimeoutError) as exc:
        log.warning("instance %s: dropping queued prompts: %r", lane.index, exc)
