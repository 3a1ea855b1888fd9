"""`comfyfleet nodes ...`: the workspace's custom nodes: list, add, remove, check, sets."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from comfyfleet.cli._console import RichReporter, make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.workspace import Workspace

nodes_app = typer.Typer(
    name="nodes",
    help="Custom nodes of the workspace: list, add (pinned to a commit), remove, check imports, "
    "and the shipped node sets.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _short(commit: str | None) -> str:
    if commit is None:
        return "-"
    return commit[:12] if len(commit) == 40 else commit


@nodes_app.command("list")
def list_command(
    workspace: WorkspaceOpt = None, config: ConfigOpt = None, json_: JsonOpt = False
) -> None:
    """Every custom node: name, source, pinned and installed commit, and state."""
    from comfyfleet.provision import node_rows

    settings = settings_from(workspace, config)
    rows = node_rows(settings.install, Workspace.from_settings(settings))
    if json_:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return
    console = make_console()
    if not rows:
        console.print(escape("no custom nodes (add one with `comfyfleet nodes add URL[@REF]`)"))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "source", "from", "pinned", "installed", "state"):
        table.add_column(column.upper())
    for row in rows:
        table.add_row(
            escape(row.name),
            escape(row.source),
            escape(row.origin),
            escape(_short(row.pinned)),
            escape(_short(row.installed)),
            escape(row.state),
        )
    console.print(table)


@nodes_app.command("add")
def add_command(
    source: Annotated[
        str,
        typer.Argument(
            help="git URL, optionally @BRANCH, @TAG or @COMMIT (default: the default branch), "
            "or a folder on this machine.",
            show_default=False,
        ),
    ],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    ref: Annotated[
        str | None,
        typer.Option(
            "--ref", help="Branch, tag or commit (instead of URL@REF).", show_default=False
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Folder name (default: the repository's).", show_default=False),
    ] = None,
    requirements: Annotated[
        str | None,
        typer.Option(
            "--requirements",
            help="Requirements file inside the node (default: requirements.txt if present).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Pin a node to the commit its ref names now, install it, and add it to the nodes list."""
    from comfyfleet.provision import add_node

    console = make_console()
    settings = settings_from(workspace, config)
    ws = Workspace.from_settings(settings)
    spec, node, path = add_node(
        settings.install,
        ws,
        source,
        reporter=RichReporter(console),
        ref=ref,
        name=name,
        requirements=requirements,
    )
    pinned = f" at {node.commit}" if node.commit else ""
    console.print(f"[green]✓[/] added {escape(spec.name)}{escape(pinned)} to {escape(str(path))}")
    console.print("[dim]running instances load it at their next restart[/]")


@nodes_app.command("remove")
def remove_command(
    name: Annotated[str, typer.Argument(help="The node's folder name.", show_default=False)],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Take a node off the nodes list and move its folder out of custom_nodes/."""
    from comfyfleet.provision import list_path, remove_node

    console = make_console()
    settings = settings_from(workspace, config)
    ws = Workspace.from_settings(settings)
    listed, moved = remove_node(settings.install, ws, name, reporter=RichReporter(console))
    if listed:
        console.print(
            f"[green]✓[/] removed {escape(name)} from {list_path(settings.install.nodes_file, ws)}"
        )
    if moved is not None:
        console.print(f"[green]✓[/] moved its folder to {escape(str(moved))}")


@nodes_app.command("check")
def check_command(
    workspace: WorkspaceOpt = None, config: ConfigOpt = None, json_: JsonOpt = False
) -> None:
    """Which custom nodes failed to import at the instances' last start (from their logs).
    Exit 1 when any failed, or when no instance has started yet."""
    from comfyfleet.provision import import_reports, node_imports

    console = make_console()
    ws = Workspace.from_settings(settings_from(workspace, config))
    reports = import_reports(ws.logs_dir)
    results = node_imports(reports)
    if json_:
        print(json.dumps([{**asdict(r), "ok": r.ok} for r in results], indent=2))
    elif not reports:
        console.print(
            f"no instance log under {ws.logs_dir} reports custom-node imports yet "
            "(start the instances with `comfyfleet up` or `serve`)"
        )
    for result in [] if json_ else results:
        where = ", ".join(str(i) for i in (result.failed_on or result.loaded_on))
        if result.ok:
            console.print(
                f"[green]✓[/] {escape(result.name):<32} loaded [dim](instance {where})[/]"
            )
        else:
            console.print(
                f"[red]✗[/] {escape(result.name):<32} IMPORT FAILED on instance {where}: "
                f"{escape(result.reason or '')}"
            )
    if not reports or not all(r.ok for r in results):
        raise typer.Exit(1)


@nodes_app.command("sets")
def sets_command(
    name: Annotated[
        str | None, typer.Argument(help="Show this set's nodes.", show_default=False)
    ] = None,
) -> None:
    """The custom-node sets shipped with comfyfleet (`install --nodes-set NAME`)."""
    from comfyfleet.provision import node_set, node_sets

    console = make_console()
    if name is None:
        for known in node_sets().values():
            count = f"{len(known.nodes):>2} nodes"
            console.print(f"[bold]{known.name:<10}[/] {count}  {escape(known.description)}")
        return
    for spec in node_set(name).nodes:
        console.print(f"{escape(spec.name):<36} {escape(spec.location)} @ {spec.ref}")
