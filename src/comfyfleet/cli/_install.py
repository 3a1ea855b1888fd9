"""`comfyfleet install`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comfyfleet.cli._console import RichReporter, make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from


def install_command(
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="git[:URL[@REF]] | index:PKG==VER[#SUBDIR] | path:DIR | "
            "archive:FILE_OR_URL[#SUBDIR] (default git)",
            show_default=False,
        ),
    ] = None,
    comfyui_version: Annotated[
        str | None,
        typer.Option(
            "--comfyui-version",
            help="ComfyUI release for git sources (X.Y.Z), or latest (the newest tag).",
            show_default=False,
        ),
    ] = None,
    torch: Annotated[
        str | None,
        typer.Option(
            "--torch",
            help="auto | existing | cpu | cu126 | cu128 | cu130 | rocm | a pip spec "
            "such as torch==2.13.0 (from the configured index) (default auto)",
            show_default=False,
        ),
    ] = None,
    nodes: Annotated[
        Path | None,
        typer.Option(
            "--nodes",
            help="YAML list of custom nodes to install (default: WORKSPACE/nodes.yaml when it "
            "exists, the list `comfyfleet nodes add` keeps).",
            show_default=False,
        ),
    ] = None,
    nodes_set: Annotated[
        list[str] | None,
        typer.Option(
            "--nodes-set",
            metavar="NAME",
            help="A shipped custom-node set to install too, pinned to commits: popular, video "
            "or complete (repeatable; `comfyfleet nodes sets` lists them). Entries of your own "
            "list win over a set's on a name clash.",
            show_default=False,
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option("--python", help="Interpreter for the workspace venv.", show_default=False),
    ] = None,
    locked: Annotated[
        bool, typer.Option("--locked", help="Reproduce comfyfleet.lock exactly; refuse to drift.")
    ] = False,
) -> None:
    """Install a pinned ComfyUI, its venv, torch and custom nodes into the workspace."""
    from comfyfleet.provision import install  # imported here: only this command needs it
    from comfyfleet.workspace import Workspace

    console = make_console()
    settings = settings_from(
        workspace,
        config,
        install={
            "source": source,
            "comfyui_version": comfyui_version,
            "torch": torch,
            "nodes_file": nodes,
            "node_sets": tuple(nodes_set) if nodes_set else None,
            "python": python,
        },
    )
    console.print(f"Installing into [bold]{settings.workspace}[/]")
    ws = Workspace.from_settings(settings)
    result = install(settings.install, ws, reporter=RichReporter(console), locked=locked)
    lock = result.lock
    if result.up_to_date:
        console.print(
            f"[green]✓[/] up to date: nothing changed since the last install "
            f"[dim]({result.seconds:.2f}s)[/]"
        )
    for change in result.changes:
        console.print(f"  [dim]lock:[/] {change}")
    nodes_text = f", {len(lock.custom_nodes)} custom nodes" if lock.custom_nodes else ""
    console.print(
        f"ComfyUI {lock.comfyui.version} ({lock.comfyui.source}), torch {lock.torch.version} "
        f"({lock.torch.variant}), {len(lock.packages)} packages{nodes_text}"
        + ("" if result.up_to_date else f" [dim]in {result.seconds:.0f}s[/]")
    )
    console.print(f"[dim]lock file: {result.workspace.lock_file}[/]")
