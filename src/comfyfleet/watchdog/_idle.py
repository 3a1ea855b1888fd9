"""The watchdogs of idle instances: free the memory of one idle a while, restart one that grew.

Both act only between jobs: an instance whose lane holds nothing (no job in flight, none being
claimed, prepared or stored) and which says it is idle (READY: ComfyUI's own queue is empty, so
no prompt from its editor runs either).

- `idle_free_s`: an instance idle this long is asked to unload its models and free cached memory
  (`POST /free`), once per idle spell. Its lane forgets which models it held (for routing).
- `rss_mb` / `vram_mb`: an instance whose memory grew past a limit (a leaking custom node, a
  fragmented allocator) is taken out of service before any await, so nothing is claimed for it,
  and restarted through the supervisor; it takes jobs again once ready (warm-up included).
  Attached servers are never restarted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from comfyfleet.comfy import ComfyError
from comfyfleet.jobs import Dispatcher
from comfyfleet.supervise import InstanceStatus, State
from comfyfleet.watchdog._memory import MemoryReader, memory_reader
from comfyfleet.watchdog._settings import WatchdogSettings

log = logging.getLogger("comfyfleet.watchdog")


class Fleet(Protocol):
    """What the watchdog needs of a supervisor (in this process, or followed in another)."""

    def status(self) -> list[InstanceStatus]: ...

    async def recycle(self, index: int, reason: str) -> bool: ...


@dataclass
class _Spell:
    """One idle spell of an instance: since when, and what was done about it."""

    since: float
    claims: int
    freed: bool = False
    refused: bool = False


class IdleWatch:
    def __init__(
        self,
        dispatcher: Dispatcher,
        fleet: Fleet,
        settings: WatchdogSettings,
        *,
        memory: MemoryReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatcher = dispatcher
        self.fleet = fleet
        self.settings = settings
        self.memory = memory or memory_reader(None)
        self.clock = clock
        self._spells: dict[int, _Spell] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_s)
            try:
                await self.check()
            except Exception:  # an instance hiccup: the next round looks again
                log.exception("checking the idle instances failed")

    async def check(self) -> None:
        """One look at every instance."""
        now = self.clock()
        statuses = {status.index: status for status in self.fleet.status()}
        for index, lane in list(self.dispatcher.lanes.items()):
            status = statuses.get(index)
            idle = lane.serving and lane.paused is None and lane.holds_nothing()
            if status is None or status.state != State.READY or not idle:
                self._spells.pop(index, None)
                continue
            spell = self._spells.get(index)
            if spell is None or spell.claims != lane.claims:  # a job came and went meanwhile
                spell = self._spells[index] = _Spell(now, lane.claims)
            if not status.attached and await self._restart_if_grown(status, spell):
                continue
            await self._free_if_idle(index, spell, now)

    async def _restart_if_grown(self, status: InstanceStatus, spell: _Spell) -> bool:
        s = self.settings
        if (s.rss_mb, s.vram_mb) == (None, None) or spell.refused:
            return False
        grown = self.memory(status).over(s.rss_mb, s.vram_mb)
        if grown is None:
            return False
        lane = self.dispatcher.lanes[status.index]
        reason = f"watchdog: memory grew past its limit while idle ({grown})"
        lane.serving, lane.paused = False, reason  # before the await: nothing is claimed here
        if await self.fleet.recycle(status.index, reason):
            log.warning("instance %s: %s; restarting it", status.index, reason)
            self._spells.pop(status.index, None)
            return True
        log.warning("instance %s: %s, but it could not be restarted", status.index, reason)
        lane.serving, lane.paused, spell.refused = True, None, True
        return False

    async def _free_if_idle(self, index: int, spell: _Spell, now: float) -> None:
        limit = self.settings.idle_free_s
        if limit is None or spell.freed or now - spell.since < limit:
            return
        spell.freed = True
        lane = self.dispatcher.lanes[index]
        try:
            await lane.client.free(unload_models=True, free_memory=True)
        except ComfyError as exc:
            log.warning("instance %s: asking it to free its memory failed: %s", index, exc)
            return
        lane.loaded = frozenset()
        log.info(
            "instance %s: idle for %.0fs, told to free its memory (POST /free)",
            index,
            now - spell.since,
        )
