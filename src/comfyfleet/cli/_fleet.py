"""`comfyfleet up`, `down`, `status`, `logs`."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape

from comfyfleet.cli._console import make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.cli._status_view import show_failure, status_table
from comfyfleet.config import Settings
from comfyfleet.errors import SupervisorError
from comfyfleet.roles import fleet_warmup
from comfyfleet.supervise import (
    SERVING,
    ControlClient,
    InstanceEvent,
    InstanceStatus,
    State,
    Supervisor,
    Warmup,
    follow,
    run_fleet,
    spawn_daemon,
    tail_lines,
)
from comfyfleet.workspace import Workspace

_STYLE = {
    "ready": "green",
    "busy": "cyan",
    "fatal": "bold red",
    "backoff": "yellow",
    "warming": "yellow",
    "restarting": "yellow",
    "exited": "red",
}


def _fleet_settings(workspace: Any, config: Any, **fleet: Any) -> tuple[Settings, Workspace]:
    settings = settings_from(workspace, config, fleet=fleet)
    return settings, Workspace.from_settings(settings)


def up_command(
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    instances: Annotated[
        int | None,
        typer.Option(
            "--instances",
            "-n",
            help="Number of instances (default: one per GPU, or 1 on CPU).",
            show_default=False,
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus", help="GPU indexes to use, e.g. 0,1 (default: all).", show_default=False
        ),
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option(
            "--base-port", help="Instance i listens on base+i (default 8188).", show_default=False
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Leave a supervisor running in the background.")
    ] = False,
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for every instance to be ready.")
    ] = 600.0,
) -> None:
    """Start the ComfyUI instances under supervision (Ctrl-C stops them, unless --detach)."""
    console = make_console()
    settings, ws = _fleet_settings(
        workspace, config, instances=instances, gpus=gpus, base_port=base_port
    )
    ws.require_installed()
    ws.prepare()
    client = ControlClient(ws.control_socket)
    if client.is_running():
        raise SupervisorError(
            f"a supervisor is already running for {ws.root}",
            hint="see `comfyfleet status`, or `comfyfleet down` first",
        )
    warmup = fleet_warmup(settings, ws)
    if detach:
        _up_detached(settings, ws, client, wait, warmup)
        return
    failed: list[InstanceStatus] = []

    def on_event(event: InstanceEvent) -> None:
        style = _STYLE.get(str(event.new), "dim")
        console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/] instance {event.instance} "
            f"[{style}]{event.new}[/] [dim]{escape(event.reason)}[/]"
        )

    def on_started(supervisor: Supervisor, stop: Callable[[], None]) -> None:
        task = _report_when_settled(supervisor, ws, wait, failed, stop)
        background.add(asyncio.get_running_loop().create_task(task))

    background: set[asyncio.Task[None]] = set()

    console.print(f"Starting the fleet of [bold]{ws.root}[/] (Ctrl-C stops it)")
    asyncio.run(
        run_fleet(settings.fleet, ws, on_event=on_event, on_started=on_started, warmup=warmup)
    )
    console.print("all instances stopped")
    if failed:
        raise typer.Exit(1)


async def _report_when_settled(
    supervisor: Supervisor,
    ws: Workspace,
    wait: float,
    failed: list[InstanceStatus],
    stop: Callable[[], None],
) -> None:
    console = make_console()
    try:
        serving = await supervisor.wait_settled(wait)
    except TimeoutError:
        serving = False
    statuses = supervisor.status()
    console.print(status_table(statuses, supervisor.settings.host))
    if serving:
        console.print("[green]✓[/] every instance is ready (Ctrl-C stops them)")
        return
    failed.extend(s for s in statuses if s.state not in SERVING and not s.attached)
    for status in failed:
        show_failure(console, ws, status)
    stop()


def _up_detached(
    settings: Settings, ws: Workspace, client: ControlClient, wait: float, warmup: Warmup | None
) -> None:
    console = make_console()
    out_file = ws.logs_dir / "supervisor.out"
    pid = spawn_daemon(settings.fleet, ws, out_file, warmup)
    deadline = time.monotonic() + 30
    while not client.is_running():
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            lines = tail_lines(out_file, 5)
            raise SupervisorError(f"the supervisor exited at once: {' / '.join(lines)}")
        if time.monotonic() > deadline:
            raise SupervisorError(
                "the supervisor did not answer within 30s", hint=f"see {out_file}"
            )
        time.sleep(0.02)
    with console.status("waiting for every instance to be ready ..."):
        reply = client.request("wait", timeout=wait + 30, seconds=wait)
    statuses = [InstanceStatus.from_dict(d) for d in reply["instances"]]
    console.print(status_table(statuses, settings.fleet.host))
    bad = [s for s in statuses if s.state not in SERVING]
    if bad:
        for status in bad:
            show_failure(console, ws, status)
        client.request("down", timeout=settings.fleet.stop_grace_s * 2 + 60)
        raise typer.Exit(1)
    console.print(
        f"[green]✓[/] {len(statuses)} instances ready; supervisor pid "
        f"{reply['supervisor']['pid']} (stop with `comfyfleet down`)"
    )


def down_command(workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Stop the supervisor and every instance it runs."""
    console = make_console()
    settings, ws = _fleet_settings(workspace, config)
    client = ControlClient(ws.control_socket)
    if not client.is_running():
        console.print(f"nothing is running for {ws.root}")
        return
    with console.status("stopping ..."):
        reply = client.request("down", timeout=settings.fleet.stop_grace_s * 2 + 60)
        deadline = time.monotonic() + 30
        while ws.control_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    console.print(f"[green]✓[/] stopped {len(reply['stopped'])} instances")


def status_command(
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each instance: state, pid, port, GPU, uptime, restarts, memory, ComfyUI version."""
    console = make_console()
    settings, ws = _fleet_settings(workspace, config)
    client = ControlClient(ws.control_socket)
    reply: dict[str, Any] | None = client.request("status") if client.is_running() else None
    installed = ws.is_installed
    if as_json:
        print(
            json.dumps(
                {
                    "workspace": str(ws.root),
                    "installed": installed,
                    "running": reply is not None,
                    "supervisor": reply["supervisor"] if reply else None,
                    "instances": reply["instances"] if reply else [],
                },
                indent=2,
            )
        )
        return
    if reply is None:
        state = "installed, not running" if installed else "not installed"
        console.print(f"{ws.root}: {state}")
        return
    statuses = [InstanceStatus.from_dict(d) for d in reply["instances"]]
    about = reply["supervisor"]
    console.print(
        f"{ws.root}: supervisor pid {about['pid']}, up {time.time() - about['started_at']:.0f}s"
    )
    console.print(status_table(statuses, settings.fleet.host))
    if any(s.state == State.FATAL for s in statuses):
        raise typer.Exit(1)


def logs_command(
    instance: Annotated[
        int | None,
        typer.Argument(
            help="Instance index (default: the supervisor's own log).", show_default=False
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines to show.")] = 50,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
) -> None:
    """Show an instance's log (or the supervisor's), optionally following it."""
    _, ws = _fleet_settings(workspace, config)
    path = ws.supervisor_log if instance is None else ws.instance_log(instance)
    if not path.exists():
        raise SupervisorError(
            f"no log at {path} yet",
            hint="instances write their logs once `comfyfleet up` started them",
        )
    for line in tail_lines(path, lines):
        print(line)
    if follow_:
        try:
            for line in follow(path):
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
