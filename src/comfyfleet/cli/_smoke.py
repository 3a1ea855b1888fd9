"""`comfyfleet smoke`: prove every running instance really executes a graph."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Annotated

import typer
from rich.markup import escape

from comfyfleet.cli._console import make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.comfy import ComfyClient, ComfyError, sample_graph
from comfyfleet.errors import SupervisorError
from comfyfleet.supervise import SERVING, ControlClient, InstanceStatus
from comfyfleet.workspace import Workspace


async def _run_on(host: str, status: InstanceStatus, ws: Workspace, timeout: float) -> str:
    """Submit a model-free graph, wait for it, and check the image landed in the output folder."""
    started = time.monotonic()
    token = secrets.token_hex(4)
    graph = sample_graph(
        prefix=f"comfyfleet-smoke/instance{status.index}-{token}", seed=secrets.randbelow(1 << 24)
    )
    async with ComfyClient(f"http://{host}:{status.port}", timeout=timeout) as client:
        prompt_id = await client.submit(graph)
        result = await client.wait(prompt_id, timeout=timeout)
    files = result.files()
    if not files:
        raise ComfyError(f"instance {status.index}: the graph ran but wrote no file")
    first = files[0]
    path = ws.output_dir / first.subfolder / first.filename
    if not path.is_file():
        raise ComfyError(f"instance {status.index}: ComfyUI reported {path} but it is not there")
    return f"{time.monotonic() - started:.2f}s -> {path}"


def smoke_command(
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per instance.")] = 120.0,
) -> None:
    """Run a tiny model-free graph on every ready instance and check its output file."""
    console = make_console()
    settings = settings_from(workspace, config)
    ws = Workspace.from_settings(settings)
    reply = ControlClient(ws.control_socket).request("status")
    statuses = [InstanceStatus.from_dict(d) for d in reply["instances"]]
    serving = [s for s in statuses if s.state in SERVING]
    if not serving:
        raise SupervisorError("no instance is ready", hint="see `comfyfleet status`")
    failures = 0
    for status in serving:
        try:
            text = asyncio.run(_run_on(settings.fleet.host, status, ws, timeout))
            console.print(f"[green]✓[/] instance {status.index}: {escape(text)}")
        except ComfyError as exc:
            failures += 1
            console.print(f"[red]✗[/] instance {status.index}: {escape(str(exc))}")
    if failures:
        raise typer.Exit(1)
