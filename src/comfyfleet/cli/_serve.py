"""`comfyfleet serve`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from comfyfleet.cli._console import make_console
from comfyfleet.cli._loop import run
from comfyfleet.cli._options import (
    BasePortOpt,
    ConfigOpt,
    GatewayHostOpt,
    GatewayPortOpt,
    WorkspaceOpt,
    settings_from,
)
from comfyfleet.supervise import InstanceEvent


def serve_command(
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    port: GatewayPortOpt = None,
    host: GatewayHostOpt = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Job store: sqlite:///PATH (default: WORKSPACE/state/jobs.db), "
            "postgresql://USER:PASSWORD@HOST/DB (shared by several machines) or memory://",
            show_default=False,
        ),
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(
            "--instances",
            "-n",
            help="CPU instances (default: one per GPU; 0: attached servers only).",
            show_default=False,
        ),
    ] = None,
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="GPU indexes, e.g. 0,1.", show_default=False)
    ] = None,
    base_port: BasePortOpt = None,
    attach: Annotated[
        list[str] | None,
        typer.Option(
            "--attach",
            help="A ComfyUI server comfyfleet did not start, by URL (repeatable): sent jobs, "
            "probed for health, never started or stopped. With --instances 0, the only ones.",
            show_default=False,
        ),
    ] = None,
    max_queued: Annotated[
        int | None,
        typer.Option(
            "--max-queued", help="Queue depth before 429 (default 1000).", show_default=False
        ),
    ] = None,
) -> None:
    """Run the fleet with the job API in front of it (Ctrl-C stops everything)."""
    from comfyfleet.roles import run_service

    console = make_console()
    serve = {"host": host, "port": port, "store": store, "max_queued": max_queued}
    settings = settings_from(
        workspace,
        config,
        fleet={
            "instances": instances,
            "gpus": gpus,
            "base_port": base_port,
            "attach": tuple(attach) if attach else None,
        },
        serve=serve,
    )

    def on_event(event: InstanceEvent) -> None:
        console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/] instance {event.instance} "
            f"{event.new} [dim]{escape(event.reason)}[/]"
        )

    def on_listening(url: str) -> None:
        console.print(f"gateway listening on [bold]{url}[/] (API docs at {url}/docs)")

    run(run_service(settings, on_event=on_event, on_listening=on_listening))
    console.print("stopped")
