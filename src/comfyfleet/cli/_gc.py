"""`comfyfleet gc [--dry-run] [--json]`: prune now what is past its retention limit.

A thin command over `comfyfleet.retention`: it opens the workspace's store (the one `serve`
uses, or `--store`), takes its turn with any running process (see `retention._task`), and prints
what it removed, or with `--dry-run` what it would remove, grouped by kind.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from comfyfleet.cli._console import make_console
from comfyfleet.cli._loop import run
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.cli._roles import StoreOpt
from comfyfleet.retention import Kind, Report

SHOWN = 20
"""Items listed per kind in the table (`--json` lists every one)."""

_LABELS = {
    Kind.JOBS: "finished jobs",
    Kind.EVENTS: "their events",
    Kind.WEBHOOKS_DELIVERED: "webhook deliveries, delivered",
    Kind.WEBHOOKS_FAILED: "webhook deliveries, failed",
    Kind.PREVIEWS: "preview frames",
    Kind.INPUTS: "input files",
    Kind.OUTPUTS: "output folders",
    Kind.TEMP: "temp files",
}


def gc_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="List what would be removed; remove nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    store: StoreOpt = None,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove finished jobs, webhook deliveries, preview frames, inputs, outputs and temp files
    past their retention limits (settings section `retention`); nothing a queued or running job
    needs is ever removed."""
    from comfyfleet.roles import run_gc

    settings = settings_from(workspace, config, serve={"store": store})
    report = run(run_gc(settings, dry_run=dry_run))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    console = make_console()
    console.print(_table(report))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")


def _table(report: Report) -> Table:
    total = report.total
    verb = "would remove" if report.dry_run else "removed"
    table = Table(
        title=f"{'dry run: ' if report.dry_run else ''}{verb} {total.count} "
        f"({human_bytes(total.bytes)})",
        caption="kept: old, but a queued or running job needs it",
    )
    for column in ("kind", "count", "size", "limit / when", "kept"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind in Kind:
        tally, kept = report.removed[kind], report.kept[kind]
        table.add_row(
            _LABELS[kind],
            str(tally.count),
            human_bytes(tally.bytes),
            _limit(report.limits.get(kind)),
            f"{kept.count} ({human_bytes(kept.bytes)})" if kept.count else "",
        )
        items = report.of(kind)
        for item in items[:SHOWN]:
            when = datetime.fromtimestamp(item.at, UTC).strftime("%Y-%m-%d %H:%M")
            why = "" if item.reason == "age" else f" [{item.reason}]"
            table.add_row(f"  [dim]{escape(item.name)}{why}[/]", "", human_bytes(item.bytes), when)
        if len(items) > SHOWN:
            table.add_row(f"  [dim]... and {len(items) - SHOWN} more[/]", "", "", "")
    return table


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _limit(seconds: float | None) -> str:
    if seconds is None:
        return "kept"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
