"""Running a fleet until told to stop: the body of `comfyfleet up` (foreground or daemon).

It takes the workspace's supervisor lock (one supervisor per workspace), plans the instances for
the GPUs found, serves the control socket, and stops everything on SIGTERM or Ctrl-C. Signal
handlers only set flags; the first Ctrl-C stops gracefully (SIGTERM, grace, SIGKILL), a second one
kills every instance at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

from comfyfleet.errors import ConfigError, SupervisorError
from comfyfleet.gpus import InstancePlan, Platform, detect_platform, plan_instances
from comfyfleet.supervise._attached import attached_specs
from comfyfleet.supervise._command import instance_specs
from comfyfleet.supervise._control import ControlServer, check_socket_path
from comfyfleet.supervise._forklaunch import DEFAULT_PRELOAD, ForkLauncher
from comfyfleet.supervise._logs import RotatingLog
from comfyfleet.supervise._probe import HttpProber, Prober
from comfyfleet.supervise._process import Launcher, SubprocessLauncher
from comfyfleet.supervise._settings import FleetSettings
from comfyfleet.supervise._states import InstanceEvent
from comfyfleet.supervise._supervisor import Supervisor
from comfyfleet.supervise._warmup import Warmup
from comfyfleet.workspace import Workspace, write_extra_model_paths

Attach = Callable[[Supervisor, Callable[[], None]], Awaitable[Callable[[], Awaitable[None]]]]
"""Starts services beside the fleet (the job dispatcher, the HTTP gateway) before the instances
start, given the supervisor and a `stop` callable; returns their async shutdown, which runs
before the instances are stopped."""


class _WorkspaceLock:
    """An flock on `state/supervisor.lock`, held for the supervisor's life. The pid written into
    it is only for the error message of a second `up`; nothing trusts it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise SupervisorError(
                f"a supervisor is already running for {self.path.parent.parent} (pid {holder})",
                hint="use `comfyfleet status` or `comfyfleet down`",
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def build_supervisor(
    fleet: FleetSettings,
    ws: Workspace,
    *,
    platform: Platform | None = None,
    launcher: Launcher | None = None,
    prober: Prober | None = None,
    warmup: Warmup | None = None,
) -> Supervisor:
    if fleet.instances == 0:  # a gateway in front of attached servers only
        if not fleet.attach:
            raise ConfigError(
                "--instances 0 leaves nothing to serve",
                hint="attach servers with --attach URL (or fleet.attach), or run instances",
            )
        plans: list[InstancePlan] = []
    else:
        found = platform or detect_platform()
        plans = plan_instances(found, instances=fleet.instances, gpus=fleet.gpus)
    return Supervisor(
        instance_specs(ws, fleet, plans),
        fleet,
        launcher=launcher or SubprocessLauncher(),
        prober=prober or HttpProber(timeout=fleet.probe_timeout_s),
        attached=attached_specs(fleet.attach, first_index=len(plans)),
        warmup=warmup,
    )


async def run_fleet(
    fleet: FleetSettings,
    ws: Workspace,
    *,
    on_event: Callable[[InstanceEvent], None] | None = None,
    on_started: Callable[[Supervisor, Callable[[], None]], None] | None = None,
    attach: Attach | None = None,
    platform: Platform | None = None,
    warmup: Warmup | None = None,
) -> None:
    """Run the fleet until SIGINT/SIGTERM, a `down` request, or the `stop` callable handed to
    `on_started`/`attach` is called; return once every instance is stopped. With no supervised
    instances (only attached servers) ComfyUI need not be installed here. `warmup`: what each
    instance runs after every start before it is ready."""
    if fleet.instances != 0:
        ws.require_installed()
    ws.prepare()
    check_socket_path(ws.control_socket)
    lock = _WorkspaceLock(ws.supervisor_lock)
    lock.acquire()
    try:
        write_extra_model_paths(
            ws.extra_model_paths, ws.models_dir, ws.custom_nodes_dir, ws.model_folders
        )
        launcher = fork_launcher(fleet, ws)
        supervisor = build_supervisor(
            fleet, ws, platform=platform, warmup=warmup, launcher=launcher
        )
        await _serve(supervisor, ws, fleet, on_event, on_started, attach, launcher)
    finally:
        lock.release()


def fork_launcher(fleet: FleetSettings, ws: Workspace) -> ForkLauncher | None:
    """The launcher that forks instances from a fork server, unless `fleet.fork_server` is off
    (its log: `logs/fork-server.log`)."""
    if not fleet.fork_server:
        return None
    return ForkLauncher(
        log_path=ws.logs_dir / "fork-server.log",
        log_max_bytes=fleet.log_max_bytes,
        log_backups=fleet.log_backups,
        preload=(*DEFAULT_PRELOAD, *fleet.fork_server_preload),
    )


async def _start_fork_server(supervisor: Supervisor, launcher: ForkLauncher | None) -> None:
    """Once every instance's first start is over: its preloading would slow them down."""
    if launcher is not None:
        await supervisor.wait_settled()
        await launcher.fleet_ready()


async def _serve(
    supervisor: Supervisor,
    ws: Workspace,
    fleet: FleetSettings,
    on_event: Callable[[InstanceEvent], None] | None,
    on_started: Callable[[Supervisor, Callable[[], None]], None] | None,
    attach: Attach | None,
    launcher: ForkLauncher | None,
) -> None:
    events_log = RotatingLog(
        ws.supervisor_log,
        max_bytes=fleet.log_max_bytes,
        backups=fleet.log_backups,
    )
    supervisor.add_listener(lambda event: events_log.line(event.describe()))
    if on_event is not None:
        supervisor.add_listener(on_event)
    stop_requested = asyncio.Event()
    stopped = asyncio.Event()

    async def shutdown() -> None:
        stop_requested.set()
        await stopped.wait()

    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal() -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            for instance in supervisor.instances:
                instance.kill_now()
        stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    control = ControlServer(supervisor, ws.control_socket, workspace=ws.root, shutdown=shutdown)
    await control.start()
    events_log.line(f"supervisor {os.getpid()} started with {len(supervisor.instances)} instances")
    detach: Callable[[], Awaitable[None]] | None = None
    warming: asyncio.Task[None] | None = None
    try:
        if attach is not None:
            detach = await attach(supervisor, stop_requested.set)
        supervisor.start()
        warming = asyncio.create_task(_start_fork_server(supervisor, launcher))
        if on_started is not None:
            on_started(supervisor, stop_requested.set)
        await stop_requested.wait()
        if detach is not None:
            await detach()
        events_log.line("stopping all instances")
        await supervisor.stop()
    finally:
        if warming is not None:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
        if launcher is not None:  # after the instances, which die with the fork server
            await launcher.aclose()
        stopped.set()
        await asyncio.sleep(0.05)  # let a pending `down` reply go out
        await control.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        events_log.line("supervisor stopped")
        events_log.close()
