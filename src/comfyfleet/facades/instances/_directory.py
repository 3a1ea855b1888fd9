"""Where the instances are: the registry, read through a short cache, and the home instance.

The registry is the only place a gateway learns where instances listen (`InstanceRecord.base_url`;
the gateway may run on another host than the agents). Opening one ComfyUI editor makes hundreds
of requests in a few seconds, so the fleet read is kept for `ttl_s` (one second) and refreshed
by one request at a time; a proxy that cannot reach an instance drops the cached read so that
the next request sees the registry's news.

An instance is named in a path by its index (`/instances/0/`), as `serve` numbers them. With
several agents, indexes repeat: then `agent:index` names one, and a bare index that more than
one agent has is refused (409) with the names to choose from, rather than guessed.

The home instance serves the stock editor's requests that the gateway has no route for. It is
the first serving instance in the registry's order, and it stays the home while it serves, so
that one browser session talks to one ComfyUI (its settings, its queue); when it stops serving,
the next request picks another.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from comfyfleet.facades.instances._errors import ProxyError
from comfyfleet.jobs import Fleet, InstanceRecord

log = logging.getLogger("comfyfleet.gateway")

_INDEX = re.compile(r"[0-9]{1,6}")
_QUALIFIED = re.compile(r"(.{1,200}):([0-9]{1,6})")


def instance_name(record: InstanceRecord) -> str:
    """`agent:index`, the name that is unique across the fleet."""
    return f"{record.agent}:{record.index}"


class InstanceDirectory:
    """The fleet as the proxies see it. `fleet` reads the registry (`Service.fleet`)."""

    def __init__(
        self,
        fleet: Callable[[], Awaitable[Fleet]],
        *,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = fleet
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: Fleet | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()
        self._home: tuple[str, int] | None = None

    async def fleet(self) -> Fleet:
        if self._cached is not None and self._clock() - self._read_at < self._ttl_s:
            return self._cached
        async with self._lock:
            if self._cached is None or self._clock() - self._read_at >= self._ttl_s:
                self._cached = await self._read()
                self._read_at = self._clock()
            return self._cached

    def forget(self) -> None:
        """Read the registry again on the next request (an instance did not answer)."""
        self._cached = None

    async def instance(self, ref: str) -> InstanceRecord:
        """The serving instance `ref` names; 404 when none, 409 when ambiguous, 503 when it
        does not serve."""
        fleet = await self.fleet()
        found = _named(fleet, ref)
        if not found:
            raise ProxyError(
                404,
                "instance_not_found",
                f"no instance '{ref}' in the fleet",
                {"instance": ref, "known": [instance_name(i) for i in fleet.instances]},
            )
        if len(found) > 1:
            raise ProxyError(
                409,
                "instance_ambiguous",
                f"several agents have an instance {ref}: name one as agent:index",
                {"instance": ref, "candidates": [instance_name(i) for i in found]},
            )
        record = found[0]
        if record not in fleet.serving():
            state = record.state if record.agent in fleet.alive else "gone"
            raise ProxyError(
                503,
                "instance_not_serving",
                f"instance '{ref}' is {state}, not serving",
                {"instance": instance_name(record), "state": state},
            )
        return record

    async def home(self) -> InstanceRecord:
        """The home instance (see the module docstring); 503 when no instance serves."""
        serving = (await self.fleet()).serving()
        for record in serving:
            if (record.agent, record.index) == self._home:
                return record
        if not serving:
            raise ProxyError(
                503,
                "no_instance_serving",
                "no ComfyUI instance is serving right now to answer this",
                None,
            )
        record = serving[0]
        self._home = (record.agent, record.index)
        log.info("the home instance is now %s (%s)", instance_name(record), record.base_url)
        return record


def _named(fleet: Fleet, ref: str) -> list[InstanceRecord]:
    if _INDEX.fullmatch(ref):
        return [i for i in fleet.instances if i.index == int(ref)]
    qualified = _QUALIFIED.fullmatch(ref)
    if qualified is None:
        return []
    agent, index = qualified.group(1), int(qualified.group(2))
    return [i for i in fleet.instances if i.agent == agent and i.index == index]
