"""The agent part: what runs next to a machine's instances, whatever else shares the process.

It is the dispatcher (one lane per instance), the reporter that registers the agent and its
instances in the store, the writer that puts preview frames where every gateway can read them,
and the webhook service. Webhook deliveries are sent by exactly one agent of the fleet at a
time: the one holding the store's `webhooks` lease (renewed every third of its time; an agent
that cannot renew stops sending before the lease can pass to another). Gateways never send, so
they stay stateless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from comfyfleet.assets import ASSETS_FOLDER
from comfyfleet.config import Settings
from comfyfleet.gateway import job_view
from comfyfleet.jobs import (
    Dispatcher,
    DispatcherSettings,
    JobLimits,
    ModelFetch,
    OutputPublisher,
    PreviewWriter,
    RemoteFolders,
    StallSettings,
)
from comfyfleet.metrics import Metrics, watch_machine
from comfyfleet.models import ModelLibrary
from comfyfleet.roles._backends import Backends
from comfyfleet.roles._commands import CommandRunner
from comfyfleet.roles._machine import MachineMeter
from comfyfleet.roles._report import Reporter, new_agent
from comfyfleet.supervise import FollowedSupervisor, Supervisor
from comfyfleet.watchdog import IdleWatch, NvmlVram, WatchdogSettings, memory_reader
from comfyfleet.webhooks import WebhookService
from comfyfleet.workspace import Workspace

log = logging.getLogger("comfyfleet.agent")

WEBHOOKS_LEASE = "webhooks"
WEBHOOKS_LEASE_S = 15.0


@dataclass
class AgentPart:
    dispatcher: Dispatcher
    reporter: Reporter
    previews: PreviewWriter
    webhooks: WebhookService
    backends: Backends
    library: ModelLibrary
    commands: CommandRunner
    machine: MachineMeter
    idle: IdleWatch | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sending: bool = False

    @property
    def worker(self) -> str:
        return self.dispatcher.worker

    def start(self) -> None:
        self.dispatcher.start()
        self.previews.start()
        self._tasks = [
            asyncio.create_task(self.reporter.run()),
            asyncio.create_task(self._lead_webhooks()),
            asyncio.create_task(self.commands.run()),
        ]
        if self.idle is not None:
            self._tasks.append(asyncio.create_task(self.idle.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dispatcher.stop()
        await self.previews.stop()
        self.machine.close()
        if self._sending:
            await self.webhooks.stop()
        registry = self.backends.registry
        with contextlib.suppress(Exception):  # the store may be away: the timeout says gone
            await registry.resign(WEBHOOKS_LEASE, self.worker)
            await self.reporter.leave()

    async def _lead_webhooks(self) -> None:
        registry = self.backends.registry
        while True:
            try:
                held = await registry.lead(WEBHOOKS_LEASE, self.worker, ttl_s=WEBHOOKS_LEASE_S)
            except Exception as exc:  # cannot renew: stop before the lease can pass on
                log.warning("renewing the webhook lease failed: %s", exc)
                held = False
            if held and not self._sending:
                log.info("this agent sends the fleet's webhooks now")
                self.webhooks.start()
            elif self._sending and not held:
                await self.webhooks.stop()
            self._sending = held
            await asyncio.sleep(WEBHOOKS_LEASE_S / 3)


def build_agent(
    settings: Settings,
    ws: Workspace,
    backends: Backends,
    supervisor: Supervisor | FollowedSupervisor,
    *,
    also_preview: Callable[[str, str, bytes], object] | None = None,
    metrics: Metrics | None = None,
) -> AgentPart:
    """The agent part for `supervisor`'s instances; `also_preview` gets every frame too (the
    hub of a gateway in this process, which then needs no round trip through the store).
    `metrics` counts the work it does and reads its machine (GPUs, instances)."""
    work = metrics.work if metrics is not None else None
    serve = settings.serve
    agent = new_agent()
    writer = PreviewWriter(backends.registry, agent.id)

    def on_preview(job_id: str, image_format: str, data: bytes) -> None:
        writer.publish(job_id, image_format, data)
        if also_preview is not None:
            also_preview(job_id, image_format, data)

    library = ModelLibrary.from_settings(settings)
    options = DispatcherSettings(
        slots_per_instance=serve.slots_per_instance,
        lease_s=serve.lease_s,
        limits=JobLimits(serve.queued_timeout_s, serve.running_timeout_s),
        affinity_max_delay_s=serve.affinity_max_delay_s,
        stall=_stall(settings.watchdog),
    )
    dispatcher = Dispatcher(
        backends.store,
        options,
        host=settings.fleet.host,
        worker=agent.id,
        publisher=OutputPublisher(ws.output_dir, backends.storage, choose=backends.storage_for),
        on_preview=on_preview,
        prepare=ModelFetch(library),
        remote=RemoteFolders(ws.input_dir, ws.output_dir, ASSETS_FOLDER),
        watch=work,
        restart=supervisor.recycle,
    )
    library.downloader.watch = work
    if metrics is not None:
        watch_machine(metrics, supervisor.status)
    supervisor.add_listener(dispatcher.on_instance_event)
    host = settings.fleet.host
    shown = f"[{host}]" if ":" in host else host

    def free_slots(index: int) -> int:
        lane = dispatcher.lanes.get(index)
        return lane.free_slots() if lane is not None else 0

    def list_models() -> dict[str, list[str]]:
        """The machine's model files, for the registry and for routing (the files a claim
        prefers after the loaded ones), read in one scan."""
        found: dict[str, list[str]] = {}
        for entry in library.models():
            found.setdefault(entry.folder_type, []).append(entry.name)
        dispatcher.on_disk = frozenset(f"{k}/{name}" for k, v in found.items() for name in v)
        return {k: sorted(v) for k, v in found.items()}

    machine = MachineMeter(
        {"models": ws.models_dir, "outputs": ws.output_dir, "workspace": ws.root}
    )
    reporter = Reporter(
        backends.registry,
        agent,
        instances=supervisor.status,
        free_slots=free_slots,
        base_url=lambda port: f"http://{shown}:{port}",
        list_models=list_models,
        loaded_models=dispatcher.loaded_models,
        machine=machine.read,
        heartbeat_s=serve.agent_heartbeat_s,
    )
    supervisor.add_listener(lambda event: reporter.wake())
    webhooks = WebhookService(
        backends.store,
        backends.outbox,
        backends.webhooks,
        view=lambda job: job_view(job, storage=backends.storage),
        watch=None if work is None else work.webhook_attempt,
    )
    commands = CommandRunner(
        backends.registry, agent.id, control=supervisor.control, log_path=ws.instance_log
    )
    idle = None
    if settings.watchdog.watches_idle:
        vram = NvmlVram() if settings.watchdog.vram_mb is not None else None
        memory = memory_reader(vram)
        idle = IdleWatch(dispatcher, supervisor, settings.watchdog, memory=memory)
    return AgentPart(
        dispatcher, reporter, writer, webhooks, backends, library, commands, machine, idle
    )


def _stall(watchdog: WatchdogSettings) -> StallSettings | None:
    if watchdog.stall_s is None:
        return None
    return StallSettings(watchdog.stall_s, watchdog.interrupt_grace_s)
