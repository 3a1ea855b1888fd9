"""`comfyfleet serve`."""

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
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run the fleet with the job API in front of it (Ctrl-C stops everything)."""
    from comfyfleet.roles import run_service

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
        log=log_flags(log_format, log_level),
    )
    output = RoleOutput(settings)
    run(run_service(settings, on_event=output.on_event, on_listening=output.on_listening))
    output.stopped()
