"""The agent's reports to the fleet registry: itself and its instances, every few seconds.

What the gateway shows of the fleet is what this writes, in every mode. Each round reads the
supervisor's state and the dispatcher's free slots (in memory, free), and what costs more is
read less often: the model files on disk every `models_every_s` (a directory scan, off the event
loop), the machine's CPU, memory, disks and GPUs every `machine_every_s`, VRAM from each serving
instance's `/system_stats` every `vram_every_s`, and an
instance's node schemas once per process of it (custom nodes only change with a restart), stored
only when their digest is new. A store that cannot be reached is retried at the next round with
a growing delay (up to `max_backoff_s`); the agent and its jobs go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from comfyfleet import __version__
from comfyfleet.comfy import ComfyClient, ComfyError
from comfyfleet.jobs import AgentRecord, InstanceRecord, NodeSchemas, Registry, digest_of
from comfyfleet.supervise import InstanceStatus

log = logging.getLogger("comfyfleet.agent")

ModelLister = Callable[[], Mapping[str, Sequence[str]]]


def new_agent(worker: str | None = None) -> AgentRecord:
    host = socket.gethostname()
    agent_id = worker or f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return AgentRecord(id=agent_id, host=host, version=__version__, started_at=time.time())


@dataclass
class _Probe:
    pid: int | None = None
    schema_digest: str | None = None
    schema_models: str = ""
    """The digest of the model files when the schemas were read: their choice lists name those
    files, so the schemas are read again when the files change."""
    vram: tuple[int | None, int | None] = (None, None)
    vram_at: float = 0.0
    system: dict[str, Any] = field(default_factory=dict)
    """What the instance's `/system_stats` says of it (versions, its devices): the ComfyUI API's
    `/system_stats` for the fleet is made of these."""


@dataclass
class Reporter:
    registry: Registry
    agent: AgentRecord
    instances: Callable[[], list[InstanceStatus]]
    free_slots: Callable[[int], int]
    base_url: Callable[[int], str]
    list_models: ModelLister = dict
    loaded_models: Callable[[int], Collection[str]] = lambda index: ()
    """What an instance holds, as its lane last saw it (`Dispatcher.loaded_models`)."""
    machine: Callable[[], Mapping[str, Any]] | None = None
    """Reads the machine (`MachineMeter.read`); None: not reported."""
    heartbeat_s: float = 3.0
    models_every_s: float = 30.0
    machine_every_s: float = 5.0
    vram_every_s: float = 10.0
    prune_after_s: float = 3600.0
    prune_every_s: float = 60.0
    frames_for_s: float = 60.0
    """Preview frames older than this are removed (a watcher only wants the last seconds')."""
    max_backoff_s: float = 30.0
    _probes: dict[int, _Probe] = field(default_factory=dict)
    _schemas_stored: set[str] = field(default_factory=set)
    _models: Mapping[str, Sequence[str]] = field(default_factory=dict)
    _models_at: float = float("-inf")
    _machine_at: float = float("-inf")
    _pruned_at: float = float("-inf")
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Report until cancelled; failures wait longer each time, then report again."""
        delay = self.heartbeat_s
        failing = False
        while True:
            try:
                await self.report_once()
                if failing:
                    log.warning("the fleet registry is reachable again")
                failing, delay = False, self.heartbeat_s
            except Exception as exc:  # the store is away: the next round tries again
                if not failing:
                    log.warning("reporting to the fleet registry failed: %s", exc)
                failing, delay = True, min(delay * 2, self.max_backoff_s)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    if failing:  # a failing store waits out its delay, whatever happens
                        await asyncio.Event().wait()
                    await self._wake.wait()

    def wake(self) -> None:
        """Report now, not at the next heartbeat (an instance changed state: readiness and
        the instance list should not lag behind it)."""
        self._wake.set()

    async def report_once(self) -> None:
        now = time.monotonic()
        if now - self._models_at >= self.models_every_s:
            self._models = await asyncio.to_thread(self.list_models)
            self._models_at = now
        if self.machine is not None and now - self._machine_at >= self.machine_every_s:
            self.agent = replace(self.agent, machine=await asyncio.to_thread(self.machine))
            self._machine_at = now
        records = [await self._record(status) for status in self.instances()]
        await self.registry.report(self.agent, records)
        if now - self._pruned_at >= self.prune_every_s:  # now and then: forget agents long gone
            self._pruned_at = now
            wall = time.time()
            await self.registry.prune(
                older_than=wall - self.prune_after_s, frames_before=wall - self.frames_for_s
            )

    async def leave(self) -> None:
        await self.registry.leave(self.agent.id)

    async def _record(self, status: InstanceStatus) -> InstanceRecord:
        state = str(status.state)
        serving = state in ("ready", "busy")
        probe = self._probes.setdefault(status.index, _Probe())
        if probe.pid != status.pid:
            self._probes[status.index] = probe = _Probe(pid=status.pid)
        url = status.url or self.base_url(status.port)  # attached servers have their own
        models_digest = digest_of(self._models)
        if probe.schema_digest is not None and probe.schema_models != models_digest:
            probe.schema_digest = None
        if serving:
            await self._probe(probe, url, models_digest)
        details: dict[str, Any] = status.to_dict()
        for name in ("index", "state", "device"):
            details.pop(name)
        if probe.system:
            details["system_stats"] = probe.system
        return InstanceRecord(
            agent=self.agent.id,
            index=status.index,
            base_url=url,
            state=state,
            device=status.device,
            vram_used=probe.vram[0],
            vram_total=probe.vram[1],
            free_slots=self.free_slots(status.index) if serving else 0,
            models={k: list(v) for k, v in self._models.items()},
            models_digest=models_digest,
            loaded_models=tuple(sorted(self.loaded_models(status.index))) if serving else (),
            schema_digest=probe.schema_digest,
            details=details,
        )

    async def _probe(self, probe: _Probe, url: str, models_digest: str) -> None:
        """Node schemas once per instance process and again when the model files change, VRAM
        now and then; an instance that does not answer keeps what was known."""
        now = time.monotonic()
        if probe.schema_digest is not None and now - probe.vram_at < self.vram_every_s:
            return
        try:
            async with ComfyClient(url, timeout=10) as client:
                if probe.schema_digest is None:
                    schemas = NodeSchemas.from_object_info(await client.object_info())
                    if schemas.digest not in self._schemas_stored:
                        await self.registry.put_schemas(schemas)
                        self._schemas_stored.add(schemas.digest)
                    probe.schema_digest = schemas.digest
                    probe.schema_models = models_digest
                stats = await client.system_stats()
                probe.vram = _vram(stats)
                probe.system = _system(stats)
                probe.vram_at = now
        except ComfyError as exc:
            log.debug("probing %s failed: %s", url, exc)


def _system(stats: Mapping[str, Any]) -> dict[str, Any]:
    found = stats.get("system")
    system: dict[str, Any] = found if isinstance(found, dict) else {}
    kept = ("comfyui_version", "python_version", "pytorch_version", "os", "embedded_python")
    devices = [d for d in stats.get("devices") or [] if isinstance(d, dict)]
    return {"system": {k: system[k] for k in kept if k in system}, "devices": devices}


def _vram(stats: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(used, total) bytes of the instance's first device, from `/system_stats`."""
    devices = stats.get("devices") or []
    if not devices or not isinstance(devices[0], dict):
        return None, None
    total, free = devices[0].get("vram_total"), devices[0].get("vram_free")
    if not isinstance(total, int) or not isinstance(free, int) or total <= 0:
        return None, None
    return total - free, total
