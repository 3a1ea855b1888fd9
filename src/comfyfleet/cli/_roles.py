"""`comfyfleet gateway` and `comfyfleet agent`: the two halves of `serve`, one per process.

Each needs one URL, the store's (`--store postgresql://...`): everything else they know of each
other is in it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from comfyfleet.cli._logs import LogFormatOpt, LogLevelOpt, RoleOutput, log_flags
from comfyfleet.cli._loop import run
from comfyfleet.cli._options import (
    BasePortOpt,
    ConfigOpt,
    GatewayHostOpt,
    GatewayPortOpt,
    WorkspaceOpt,
    settings_from,
)

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
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run the job API alone, in front of the agents registered in the store (stateless: run
    as many as you like behind a load balancer)."""
    from comfyfleet.roles import run_gateway

    settings = settings_from(
        workspace,
        config,
        serve={"host": host, "port": port, "store": store},
        log=log_flags(log_format, log_level),
    )
    output = RoleOutput(settings)
    run(run_gateway(settings, on_listening=output.on_listening))
    output.stopped()


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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve this machine's /metrics (GPUs, downloads, job phases) on this port "
            "(address: metrics.agent_host, default 127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run this machine's ComfyUI instances and take jobs for them from the store (Ctrl-C stops
    them; their running jobs run again elsewhere)."""
    from comfyfleet.roles import run_agent

    settings = settings_from(
        workspace,
        config,
        fleet={"instances": instances, "gpus": gpus, "base_port": base_port},
        serve={"store": store},
        metrics={"agent_port": metrics_port},
        log=log_flags(log_format, log_level),
    )
    output = RoleOutput(settings)
    run(run_agent(settings, on_event=output.on_event))
    output.stopped()
