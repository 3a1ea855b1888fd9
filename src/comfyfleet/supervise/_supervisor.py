"""The supervisor: a set of instances, their events, and the port bookkeeping between them.

Attached servers (`_attached`) sit beside the supervised instances: their events go to the same
listeners and their statuses into the same list, but restarts and kills never reach them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from comfyfleet.errors import SupervisorError
from comfyfleet.supervise._attached import AttachedInstance, AttachedSpec
from comfyfleet.supervise._instance import Instance, InstanceSpec
from comfyfleet.supervise._ports import choose_port, port_is_free
from comfyfleet.supervise._probe import Prober, UrlProber
from comfyfleet.supervise._process import Launcher
from comfyfleet.supervise._settings import FleetSettings
from comfyfleet.supervise._states import SERVING, InstanceEvent, State
from comfyfleet.supervise._status import InstanceStatus
from comfyfleet.supervise._warmup import Warmup, WarmupRunner

EventSink = Callable[[InstanceEvent], None]


class Supervisor:
    """Runs every instance's state machine; fans their events out to subscribers."""

    def __init__(
        self,
        specs: Sequence[InstanceSpec],
        settings: FleetSettings,
        *,
        launcher: Launcher,
        prober: Prober,
        port_probe: Callable[[str, int], bool] = port_is_free,
        history: int = 500,
        attached: Sequence[AttachedSpec] = (),
        url_prober: UrlProber | None = None,
        warmup: Warmup | None = None,
        warmer: WarmupRunner | None = None,
    ) -> None:
        self.settings = settings
        self._port_probe = port_probe
        self._listeners: list[EventSink] = []
        self._queues: set[asyncio.Queue[InstanceEvent]] = set()
        self.events: deque[InstanceEvent] = deque(maxlen=history)
        self.started_at = time.time()
        self.instances = [
            Instance(
                spec,
                settings,
                launcher=launcher,
                prober=prober,
                pick_port=self._pick_port,
                emit=self._publish,
                warmup=warmup,
                warmer=warmer,
            )
            for spec in specs
        ]
        self._prober = prober
        self._separate_url_prober = url_prober is not None
        if url_prober is None and isinstance(prober, UrlProber):
            url_prober = prober
        if attached and url_prober is None:
            raise SupervisorError("attached servers need a prober that can probe a URL")
        self._url_prober = url_prober
        self.attached = [
            AttachedInstance(spec, settings, prober=url_prober, emit=self._publish)
            for spec in attached
            if url_prober is not None
        ]

    # --- events ----------------------------------------------------------------------------
    def add_listener(self, sink: EventSink) -> None:
        self._listeners.append(sink)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[InstanceEvent]]:
        queue: asyncio.Queue[InstanceEvent] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    def _publish(self, event: InstanceEvent) -> None:
        self.events.append(event)
        for sink in self._listeners:
            sink(event)
        for queue in self._queues:
            queue.put_nowait(event)

    # --- ports -----------------------------------------------------------------------------
    def _pick_port(self, index: int, wanted: int) -> tuple[int, str | None]:
        """Ports planned or held by the other instances are never handed out twice."""
        others = {i.spec.wanted_port for i in self.instances if i.spec.index != index}
        others |= {i.port for i in self.instances if i.spec.index != index}
        host = self.instances[0].spec.host if self.instances else "127.0.0.1"
        return choose_port(
            host, wanted, avoid=others, policy=self.settings.port_conflict, probe=self._port_probe
        )

    # --- control ---------------------------------------------------------------------------
    def start(self) -> None:
        for instance in self.instances:
            instance.start()
        for server in self.attached:
            server.start()

    async def stop(self) -> None:
        await asyncio.gather(
            *(instance.stop() for instance in self.instances),
            *(server.stop() for server in self.attached),
        )
        await self._prober.aclose()
        if self._url_prober is not None and self._separate_url_prober:
            await self._url_prober.aclose()

    def restart(self, index: int | None = None) -> list[int]:
        chosen = [i for i in self.instances if index is None or i.spec.index == index]
        for instance in chosen:
            instance.restart()
        return [i.spec.index for i in chosen]

    async def recycle(self, index: int, reason: str) -> bool:
        """Restart the serving instance `index` now, saying why (a watchdog's request); False
        when there is no such supervised instance or it is not serving (attached servers are
        never restarted). Async like :meth:`FollowedSupervisor.recycle`, which asks another
        process."""
        chosen = next((i for i in self.instances if i.spec.index == index), None)
        return chosen is not None and chosen.recycle(reason)

    def status(self) -> list[InstanceStatus]:
        return [i.status() for i in self.instances] + [a.status() for a in self.attached]

    def settled(self) -> bool:
        """Every instance is serving, or at least one is fatal (no point waiting longer), and
        every attached server has answered its first probe, whatever the answer."""
        states = {i.state for i in self.instances}
        probed = all(a.state not in (State.STOPPED, State.PROBING) for a in self.attached)
        return probed and (State.FATAL in states or states <= SERVING)

    async def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`settled`; True when every supervised instance is serving. An
        attached server that is down is not a failed start (`up` does not stop the fleet for
        it): its state says so."""
        with self.subscribe() as queue:
            async with asyncio.timeout(timeout):
                while not self.settled():
                    await queue.get()
        return all(i.state in SERVING for i in self.instances)
