"""`comfyfleet run WORKFLOW.json` or `run --template NAME -p key=value`: submit to a server (or
an ephemeral one), show progress, write the outputs, exit non-zero with the node's error on
failure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from comfyfleet.cli._console import make_console
from comfyfleet.cli._template_params import parse_params
from comfyfleet.errors import ComfyfleetError, ConfigError


def apply_sets(workflow: dict[str, Any], sets: list[str]) -> None:
    """`NODE.INPUT=VALUE` overrides; VALUE is JSON when it parses, else a string."""
    for item in sets:
        target, sep, raw = item.partition("=")
        node_id, dot, name = target.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set '{item}' must look like NODE.INPUT=VALUE (6.text=\"a cat\")")
        node = workflow.get(node_id)
        if not isinstance(node, dict):
            raise ConfigError(f"--set '{item}': the workflow has no node '{node_id}'")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node.setdefault("inputs", {})[name] = value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _ephemeral_server(workspace: Path | None) -> Iterator[str]:
    """A `comfyfleet serve` of our own, on a free port with an in-memory store."""
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "comfyfleet",
        "serve",
        "--port",
        str(port),
        "--store",
        "memory://",
    ]
    if workspace is not None:
        argv += ["--workspace", str(workspace)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    status = make_console().status("starting the job service on the workspace (no --server)")
    try:
        status.start()
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
                raise ComfyfleetError(f"the ephemeral server exited: {' / '.join(err[-3:])}")
            try:
                if httpx.get(f"{url}/ready", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ComfyfleetError("the ephemeral server was not ready within 600s")
            time.sleep(0.2)
        status.stop()
        yield url
    finally:
        status.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)


def _follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    console = make_console()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"job {job_id}", total=1.0, note="queued")
        while True:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            status = job["status"]
            p = job.get("progress") or {}
            note = status if status != "queued" else f"queued (position {job['queue_position']})"
            if status == "running" and p:
                note = f"node {p.get('node')} step {p.get('value')}/{p.get('max')}"
            progress.update(task, completed=float(p.get("fraction") or 0), note=note)
            if status in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.2)


def _download(client: httpx.Client, job: dict[str, Any], out: Path) -> list[Path]:
    written = []
    for output in job["outputs"]:
        url = output.get("url")
        if not url:
            continue
        target = out / job["id"] / output["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        response = client.get(url)
        response.raise_for_status()
        target.write_bytes(response.content)
        written.append(target)
    return written


def run_command(
    workflow_file: Annotated[
        Path | None,
        typer.Argument(help="API-format workflow JSON (or use --template).", show_default=False),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override an input: NODE.INPUT=VALUE (repeatable)."),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template", "-t", help="Run a template instead of a file.", show_default=False
        ),
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A template parameter: NAME=VALUE (repeatable; an image may be a local file).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where outputs are written.")] = Path(
        "outputs"
    ),
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Gateway URL [env COMFYFLEET_SERVER] (default: start one).",
            show_default=False,
        ),
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace", "-w", help="Workspace for an ephemeral server.", show_default=False
        ),
    ] = None,
    priority: Annotated[int, typer.Option("--priority")] = 0,
) -> None:
    """Run one workflow (a file, or a template with parameters) and write its outputs."""
    console = make_console()
    workflow = _workflow(workflow_file, template, sets or [], params or [])
    url = server or os.environ.get("COMFYFLEET_SERVER")
    with _ephemeral_server(workspace) if url is None else _given(url) as base:
        with httpx.Client(base_url=base, timeout=60, trust_env=False) as client:
            if template is not None:
                body = _submit_template(client, template, params or [], priority)
            else:
                body = _submit(client, {"workflow": workflow, "priority": priority})
            job = _follow(client, body["id"])
            if job["status"] != "succeeded":
                message = (job.get("error") or {}).get("message") or job["status"]
                console.print(
                    f"[bold red]error:[/] job {job['id']} {job['status']}: {escape(str(message))}"
                )
                raise typer.Exit(1)
            files = _download(client, job, out)
    running = (job.get("timings") or {}).get("running_s")
    console.print(
        f"[green]✓[/] job {job['id']} succeeded"
        + (f" in {running:.2f}s" if running is not None else "")
    )
    for path in files:
        console.print(f"  {path}")


def _workflow(
    workflow_file: Path | None, template: str | None, sets: list[str], params: list[str]
) -> dict[str, Any]:
    """The workflow file's graph with `--set` applied; {} for a template (the server has it)."""
    if workflow_file is not None and template is not None:
        raise ConfigError("give a workflow file or --template NAME, not both")
    if template is not None:
        if sets:
            raise ConfigError("--set changes a workflow file; a template takes -p NAME=VALUE")
        return {}
    if workflow_file is None:
        raise ConfigError("give a workflow file (API format) or --template NAME")
    if params:
        raise ConfigError("-p sets a template's parameters; use it with --template NAME")
    try:
        workflow = json.loads(workflow_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read workflow {workflow_file}: {exc}") from exc
    if not isinstance(workflow, dict):
        raise ConfigError(f"workflow {workflow_file} must be a JSON object of nodes")
    apply_sets(workflow, sets)
    return workflow


def _submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/v1/jobs", json=body)
    found: dict[str, Any] = answer.json()
    if answer.status_code >= 400:
        error = found.get("error", {})
        raise ComfyfleetError(f"the server refused the workflow: {error.get('message')}")
    return found


def _submit_template(
    client: httpx.Client, name: str, items: list[str], priority: int
) -> dict[str, Any]:
    """The template's schema first (to read each -p value as its type), then the job."""
    described = client.get(f"/v1/templates/{quote(name, safe='')}")
    try:
        template: dict[str, Any] = described.json()
    except ValueError:
        template = {}
    if described.status_code >= 400 or "parameters" not in template:
        error = template.get("error") or {}
        shown = f"template '{name}': {described.status_code} {described.text[:200]}"
        raise ComfyfleetError(str(error.get("message") or shown))
    params = parse_params(items, template["parameters"])
    answer = client.post(
        f"/v1/templates/{quote(name, safe='')}/jobs",
        json={"params": params, "priority": priority},
    )
    found: dict[str, Any] = answer.json()
    if answer.status_code >= 400:
        error = found.get("error", {})
        raise ComfyfleetError(f"the server refused the parameters: {error.get('message')}")
    return found


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")
