"""Rendering instance status as a table (and the error shown when an instance cannot start)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from comfyfleet.supervise import InstanceStatus, State, tail_lines
from comfyfleet.workspace import Workspace

_STATE_STYLE = {
    State.READY: "green",
    State.BUSY: "cyan",
    State.STARTING: "yellow",
    State.WARMING: "yellow",
    State.RESTARTING: "yellow",
    State.BACKOFF: "yellow",
    State.EXITED: "red",
    State.FATAL: "bold red",
    State.STOPPING: "dim",
    State.STOPPED: "dim",
    State.PROBING: "yellow",
    State.UNREACHABLE: "red",
    State.NOT_COMFYUI: "bold red",
}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _memory(rss: int | None) -> str:
    return "-" if rss is None else f"{rss / (1 << 20):.0f} MiB"


def status_table(statuses: Sequence[InstanceStatus], host: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in (
        "#",
        "state",
        "pid",
        "address",
        "device",
        "uptime",
        "restarts",
        "memory",
        "comfyui",
        "note",
    ):
        table.add_column(column)
    now = time.time()
    for s in statuses:
        style = _STATE_STYLE.get(s.state, "")
        uptime = (
            _duration(now - s.ready_since)
            if s.ready_since and s.state in (State.READY, State.BUSY)
            else "-"
        )
        table.add_row(
            str(s.index),
            f"[{style}]{s.state}[/]",
            str(s.pid or "-"),
            escape(s.url) if s.attached and s.url else f"{host}:{s.port}",
            escape(s.device),
            uptime,
            str(s.restarts),
            _memory(s.rss_bytes),
            s.version or "-",
            escape(s.reason[:60]),
        )
    return table


def show_failure(console: Console, ws: Workspace, status: InstanceStatus, lines: int = 15) -> None:
    """The one-line error for an instance that could not start, and its last log lines."""
    console.print(
        f"[bold red]error:[/] instance {status.index} could not start: {escape(status.reason)}"
    )
    log = ws.instance_log(status.index)
    tail = [line for line in tail_lines(log, lines * 3) if "[comfyfleet]" not in line][-lines:]
    if tail:
        console.print(f"[dim]last lines of {log}:[/]")
        for line in tail:
            console.print(f"  [dim]│[/] {escape(line)}")
