"""The roles as programs: `serve` (both parts in one process), `gateway` and `agent`.

`serve` is not a special case: its gateway part reads the fleet from the registry that its agent
part writes, as separate processes do. The gateway and the dispatcher are attached to the fleet
before the instances start, and are stopped before the instances are: jobs still running then
fail their attempt as retryable and run again after a restart (the store is durable; nothing is
lost). Webhook deliveries left pending are sent after a restart too. Every role prunes what is
past its retention limit now and then (`_retention`).

Where `comfyfleet up --detach` already runs the workspace's fleet, `serve` and `agent` follow
that supervisor through its control socket (`FollowedSupervisor`) instead of starting instances:
the instance options of the command do not apply then, and stopping it leaves the fleet running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

from comfyfleet.config import Settings
from comfyfleet.errors import PortInUseError
from comfyfleet.roles._agent import build_agent
from comfyfleet.roles._backends import open_backends
from comfyfleet.roles._gateway import build_service, start_gateway
from comfyfleet.roles._observe import new_metrics, serve_agent_metrics
from comfyfleet.roles._retention import start_retention
from comfyfleet.supervise import (
    ControlClient,
    FollowedSupervisor,
    InstanceEvent,
    Supervisor,
    Warmup,
    port_is_free,
    run_fleet,
)
from comfyfleet.templates import TemplateLibrary
from comfyfleet.watchdog import build_warmup
from comfyfleet.workspace import Workspace

log = logging.getLogger("comfyfleet.agent")

Fleet = Supervisor | FollowedSupervisor
"""The instances the agent part serves: its own supervisor's, or a detached one's."""
Attach = Callable[[Fleet, Callable[[], None]], Awaitable[Callable[[], Awaitable[None]]]]


def _check_port(settings: Settings) -> None:
    serve = settings.serve
    if not port_is_free(serve.host, serve.port):
        raise PortInUseError(
            f"port {serve.port} on {serve.host} is in use", hint="choose another with --port"
        )


def fleet_warmup(settings: Settings, ws: Workspace) -> Warmup | None:
    """The warm-ups of the `watchdog` settings as graphs, read once before the fleet starts (an
    unreadable one stops the start, naming the setting)."""
    watchdog = settings.watchdog
    if watchdog.warmup is None and not watchdog.warmup_instances:
        return None
    return build_warmup(
        watchdog, TemplateLibrary.for_workspace(ws.root, settings.templates.folders)
    )


async def run_service(
    settings: Settings,
    *,
    on_event: Callable[[InstanceEvent], None] | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """`comfyfleet serve`: the agent part and the gateway part on one store."""
    ws = Workspace.from_settings(settings)
    detached = await _detached(ws)
    if detached is None:
        _require_installed(settings, ws)
    _check_port(settings)
    async with open_backends(settings, ws) as backends:

        async def attach(
            supervisor: Fleet, stop: Callable[[], None]
        ) -> Callable[[], Awaitable[None]]:
            service = build_service(settings, ws, backends, None)
            metrics = new_metrics(settings)
            agent = build_agent(
                settings,
                ws,
                backends,
                supervisor,
                also_preview=service.previews.publish,
                metrics=metrics,
            )
            service.notify = agent.dispatcher.notify
            service.dispatch = agent.dispatcher.dispatch
            service.wake_commands = agent.commands.wake
            agent.start()
            detach_gateway = await start_gateway(
                settings,
                ws,
                backends,
                service,
                agent=agent,
                on_listening=on_listening,
                metrics=metrics,
            )
            retention = start_retention(settings, ws, backends)

            async def detach() -> None:
                if retention is not None:
                    await retention.stop()
                await detach_gateway()
                await agent.stop()
                if metrics is not None:
                    await metrics.close()

            return detach

        await _run_or_follow(settings, ws, detached, attach, on_event)


async def run_agent(
    settings: Settings, *, on_event: Callable[[InstanceEvent], None] | None = None
) -> None:
    """`comfyfleet agent`: this machine's instances, their dispatcher, their registration."""
    ws = Workspace.from_settings(settings)
    detached = await _detached(ws)
    if detached is None:
        _require_installed(settings, ws)
    async with open_backends(settings, ws) as backends:

        async def attach(
            supervisor: Fleet, stop: Callable[[], None]
        ) -> Callable[[], Awaitable[None]]:
            metrics = new_metrics(settings, agent_alone=True)
            agent = build_agent(settings, ws, backends, supervisor, metrics=metrics)
            agent.start()
            retention = start_retention(settings, ws, backends)
            stop_metrics = None if metrics is None else await serve_agent_metrics(settings, metrics)

            async def detach() -> None:
                if retention is not None:
                    await retention.stop()
                if stop_metrics is not None:
                    await stop_metrics()
                await agent.stop()
                if metrics is not None:
                    await metrics.close()

            return detach

        await _run_or_follow(settings, ws, detached, attach, on_event)


async def _detached(ws: Workspace) -> ControlClient | None:
    """The client of a supervisor already running for `ws` (`up --detach`), else None."""
    client = ControlClient(ws.control_socket)
    return client if await asyncio.to_thread(client.is_running) else None


async def _run_or_follow(
    settings: Settings,
    ws: Workspace,
    detached: ControlClient | None,
    attach: Attach,
    on_event: Callable[[InstanceEvent], None] | None,
) -> None:
    """Run the fleet here, or follow the detached supervisor, until SIGINT or SIGTERM."""
    if detached is None:
        warmup = fleet_warmup(settings, ws)
        await run_fleet(settings.fleet, ws, attach=attach, on_event=on_event, warmup=warmup)
        return
    followed = FollowedSupervisor(detached, poll_s=settings.fleet.probe_interval_s)
    if on_event is not None:
        followed.add_listener(on_event)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.warning(
        "following the fleet that `comfyfleet up --detach` runs in %s (stop it with "
        "`comfyfleet down`)",
        ws.root,
    )
    try:
        detach = await attach(followed, stop.set)
        polling = asyncio.create_task(followed.run())
        try:
            await stop.wait()
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            await detach()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_gateway(
    settings: Settings, *, on_listening: Callable[[str], None] | None = None
) -> None:
    """`comfyfleet gateway`: the HTTP API alone, until SIGINT or SIGTERM. It needs no ComfyUI
    here: everything it knows of the fleet is in the store."""
    ws = Workspace.from_settings(settings)
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    _check_port(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_backends(settings, ws) as backends:
            service = build_service(settings, ws, backends, None)
            metrics = new_metrics(settings)
            detach = await start_gateway(
                settings, ws, backends, service, on_listening=on_listening, metrics=metrics
            )
            retention = start_retention(settings, ws, backends)
            try:
                await stop.wait()
            finally:
                if retention is not None:
                    await retention.stop()
                await detach()
                if metrics is not None:
                    await metrics.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _require_installed(settings: Settings, ws: Workspace) -> None:
    """A fleet of attached servers only (`--instances 0`) runs no ComfyUI of its own."""
    if settings.fleet.instances != 0:
        ws.require_installed()
