"""`comfyfleet export TARGET`: deployment files for these settings."""

from __future__ import annotations

import getpass
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from comfyfleet.cli._console import make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.config import find_config_file


def export_command(
    target: Annotated[
        str,
        typer.Argument(
            help="docker | compose | systemd | supervisord | k8s, or all (each in its folder).",
            show_default=False,
            metavar="TARGET",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder to write into (default: deploy/TARGET).", show_default=False
        ),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant",
            help="Image the compose files and manifests run: minimal | standard | full "
            "(default standard).",
            show_default=False,
        ),
    ] = None,
    executable: Annotated[
        Path | None,
        typer.Option(
            "--executable",
            help="The comfyfleet command on the service's machine (systemd, supervisord; "
            "default: this one).",
            show_default=False,
        ),
    ] = None,
    service_user: Annotated[
        str | None,
        typer.Option(
            "--service-user",
            help="User the systemd and supervisord services run as (default: the workspace's "
            "owner, else comfyfleet).",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write deployment files for these settings (secrets stay out: the files name the env
    files and Secrets that hold them)."""
    from comfyfleet.deploy import ALL, DEFAULT_VARIANT, Deployment, check_target, render
    from comfyfleet.deploy import write_files as write

    targets = check_target(target)
    settings = settings_from(workspace, config)
    deployment = Deployment(
        settings,
        variant=variant or DEFAULT_VARIANT,
        executable=(executable or _this_command()).absolute(),
        service_user=service_user or _owner(settings.workspace),
        config_file=find_config_file(config, settings.workspace),
    )
    console = make_console()
    base = out or Path("deploy") / ("" if target == ALL else target)
    notes: list[str] = []
    for name in targets:
        rendered = render(name, deployment)
        folder = base / name if target == ALL else base
        for path in write(rendered.files, folder):
            console.print(f"[green]✓[/] {escape(str(path))}")
        notes += [note for note in rendered.notes if note not in notes]
    for note in notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")


def _this_command() -> Path:
    """The `comfyfleet` beside this interpreter (a venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "comfyfleet"
    if beside.exists():
        return beside
    found = shutil.which("comfyfleet")
    return Path(found) if found else beside


def _owner(workspace: Path) -> str:
    """The workspace's owner runs the service, so it can write what it wrote before."""
    try:
        import pwd

        return pwd.getpwuid(workspace.stat().st_uid).pw_name
    except (OSError, KeyError, ImportError):
        return "comfyfleet" if not workspace.exists() else getpass.getuser()
