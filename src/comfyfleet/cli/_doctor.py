"""`comfyfleet doctor`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape

from comfyfleet.cli._console import make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.gpus import detect_platform
from comfyfleet.workspace import Workspace

_MARK = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}


def doctor_command(
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    min_free_gb: Annotated[
        float,
        typer.Option(
            "--min-free-gb",
            min=0,
            metavar="GIB",
            help="Free space every written volume must have, in GiB.",
        ),
    ] = 2.0,
    models_mount: Annotated[
        bool,
        typer.Option(
            "--models-mount",
            help="Fail unless the models root is a volume of its own (for deployments that "
            "mount one there).",
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Skip the job store and output storage round trips."),
    ] = False,
) -> None:
    """Check the installed environment (torch, GPUs, torchvision ...), the volumes (models root,
    writable folders, free space) and whether the job store and output storage answer. One line
    per check; exit 1 when any failed."""
    from comfyfleet.provision import diagnose, volume_checks  # only this command needs them
    from comfyfleet.roles import reachability_checks

    console = make_console()
    settings = settings_from(workspace, config)
    ws = Workspace.from_settings(settings)
    checks = diagnose(ws, detect_platform())
    checks += volume_checks(
        ws, min_free_bytes=int(min_free_gb * 1024**3), require_models_mount=models_mount
    )
    if not offline:
        checks += asyncio.run(reachability_checks(settings, ws))
    for check in checks:
        console.print(f"{_MARK[check.level]} {check.name:<15} {escape(check.detail)}")
    if any(check.level == "fail" for check in checks):
        raise typer.Exit(1)
