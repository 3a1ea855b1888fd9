"""`comfyfleet gateway` and `comfyfleet agent`: the two halves of `serve`, one per process.

Each needs one URL, the store's (`--store postgresql://...`): everything else they know of each
other is in it.
"""

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

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="The store every gateway and agent shares: postgresql://USER:PASSWORD@HOST/DB "
        "(several machines) or sqlite:///PATH (one machine).",
        show_default=False,
    ),
]


def gateway_command(
    store: StoreOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    port: GatewayPortOpt = None,
    host: GatewayHostOpt = None,
) -> None:
    """Run the job API alone, in front of the agents registered in the store (stateless: run
    as many as you like behind a load balancer)."""
    from comfyfleet.roles import run_gateway

    console = make_console()
    settings = settings_from(workspace, config, serve={"host": host, "port": port, "store": store})

    def on_listening(url: str) -> None:
        console.print(f"gateway listening on [bold]{url}[/] (API docs at {url}/docs)")

    run(run_gateway(settings, on_listening=on_listening))
    console.print("stopped")


def agent_command(
    store: StoreOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    instances: Annotated[
        int | None,
        typer.Option(
            "--instances", "-n", help="CPU instances (default: one per GPU).", show_default=False
        ),
    ] = None,
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="GPU indexes, e.g. 0,1.", show_default=False)
    ] = None,
    base_port: BasePortOpt = None,
) -> None:
    """Run this machine's ComfyUI instances and take jobs for them from the store (Ctrl-C stops
    them; their running jobs run again elsewhere)."""
    from comfyfleet.roles import run_agent

    console = make_console()
    settings = settings_from(
        workspace,
        config,
        fleet={"instances": instances, "gpus": gpus, "base_port": base_port},
        serve={"store": store},
    )

    def on_event(event: InstanceEvent) -> None:
        console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/] instance {event.instance} "
            f"{event.new} [dim]{escape(event.reason)}[/]"
        )

    run(run_agent(settings, on_event=on_event))
    console.print("stopped")
