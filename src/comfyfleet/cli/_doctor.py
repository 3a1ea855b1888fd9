"""`comfyfleet doctor`."""

from __future__ import annotations

import typer
from rich.markup import escape

from comfyfleet.cli._console import make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.gpus import detect_platform
from comfyfleet.workspace import Workspace

_MARK = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}


def doctor_command(workspace: WorkspaceOpt = None, config: ConfigOpt = None) -> None:
    """Check the installed environment against this machine (torch, GPUs, torchvision ...)."""
    from comfyfleet.provision import diagnose  # only this command needs the installer

    console = make_console()
    ws = Workspace.from_settings(settings_from(workspace, config))
    checks = diagnose(ws, detect_platform())
    for check in checks:
        console.print(f"{_MARK[check.level]} {check.name:<15} {escape(check.detail)}")
    if any(check.level == "fail" for check in checks):
        raise typer.Exit(1)
