"""`comfyfleet models ...`: install presets or sources with live bars, list, remove, hash."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from comfyfleet.cli._console import make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from

if TYPE_CHECKING:
    from comfyfleet.models import PresetStatus

models_app = typer.Typer(
    name="models",
    help="Model files: install presets or URLs (resumable, verified), list, remove, hash.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts are plain: [env X], [#SUBDIR] are text, not markup
)

TypeOpt = Annotated[
    str | None,
    typer.Option(
        "--type", "-t", help="Folder type (checkpoints, loras, vae, ...).", show_default=False
    ),
]


def _library(workspace: Path | None, config: Path | None) -> Any:
    from comfyfleet.models import ModelLibrary  # imported here: only these commands need it

    return ModelLibrary.from_settings(settings_from(workspace, config))


class _Bars:
    """One rich bar per file, fed by DownloadProgress reports."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, report: Any) -> None:
        task = self.tasks.get(report.file)
        if task is None:
            task = self.progress.add_task(report.file, total=report.total)
            self.tasks[report.file] = task
        self.progress.update(task, completed=report.done, total=report.total)
        if report.message:
            self.progress.console.print(f"  [yellow]note:[/] {escape(report.message)}")


@models_app.command("install")
def install_command(
    targets: Annotated[list[str], typer.Argument(help="Preset names or sources (URL, hf://...).")],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    folder_type: TypeOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="File name for a source.", show_default=False)
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="Expected sha256 of a source.", show_default=False),
    ] = None,
) -> None:
    """Download presets or single sources into the models root (resumes what was cut off)."""
    console = make_console()
    library = _library(workspace, config)
    items = []
    for target in targets:
        if target in library.catalog.presets:
            items += library.preset_items(target)
        else:
            items.append(
                library.source_item(target, folder_type=folder_type, filename=name, sha256=sha256)
            )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),  # MiB and GiB, as `models list` shows sizes
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        results = asyncio.run(library.downloader.download_all(items, _Bars(progress)))
    for result in results:
        verb = "already there" if result.skipped else f"{result.seconds:.1f}s"
        sha = f" sha256 {result.sha256[:12]}" if result.sha256 else ""
        console.print(f"[green]✓[/] {escape(str(result.path))} [dim]({verb}{sha})[/]")


@models_app.command("list")
def list_command(
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    folder_type: TypeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Hash files whose sha256 is not cached yet.")
    ] = False,
) -> None:
    """The model files in the models root, and which presets are complete."""
    from comfyfleet.models import human_size

    library = _library(workspace, config)
    entries = library.models(folder_type, verify=verify)
    presets = library.presets(verify=verify)
    if as_json:
        data = {
            "models": [e.to_dict() for e in entries],
            "presets": [p.to_dict() for p in presets],
        }
        print(json.dumps(data, indent=2))
        return
    console = make_console()
    table = Table("type", "name", "size", "sha256", box=None)
    for entry in entries:
        sha = entry.sha256[:12] if entry.sha256 else "[dim]-[/]"
        table.add_row(entry.folder_type, escape(entry.name), human_size(entry.size), sha)
    console.print(table if entries else f"[dim]no model files under {library.folders.root}[/]")
    console.print()
    for status in presets:
        mark = "[green]complete[/]" if status.complete else "[yellow]incomplete[/]"
        console.print(f"preset [bold]{status.preset.name}[/]: {mark}{_problems(status)}")


_PROBLEMS = {"missing": "missing", "wrong_size": "wrong size", "wrong_hash": "wrong hash"}


def _problems(status: PresetStatus) -> str:
    """What keeps a preset from being complete, file by file and by kind of problem."""
    parts = []
    for state, label in _PROBLEMS.items():
        names = [f.file.filename for f in status.files if f.state == state]
        if names:
            parts.append(f"{label}: {escape(', '.join(names))}")
    return f" [dim]{'; '.join(parts)}[/]" if parts else ""


@models_app.command("remove")
def remove_command(
    folder_type: Annotated[str, typer.Argument(help="Folder type, e.g. checkpoints.")],
    name: Annotated[str, typer.Argument(help="File name as `models list` shows it.")],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete one model file (and any partial download of it)."""
    path = _library(workspace, config).remove(folder_type, name)
    make_console().print(f"[green]✓[/] removed {escape(str(path))}")


@models_app.command("hash")
def hash_command(
    manifest: Annotated[Path, typer.Argument(help="A manifest YAML file, or a model file.")],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    write: Annotated[
        bool, typer.Option("--write/--dry-run", help="Write missing sizes and hashes back.")
    ] = True,
) -> None:
    """Fill in the size and sha256 of a manifest's files from the files on disk."""
    from comfyfleet.models import load_manifest, sha256_file

    console = make_console()
    if manifest.suffix not in (".yaml", ".yml"):
        console.print(
            f"{sha256_file(manifest)}  {manifest.stat().st_size}  {escape(str(manifest))}"
        )
        return
    load_manifest(manifest)  # checks it first
    library = _library(workspace, config)
    data = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
    entries = [f for p in (data.get("presets") or {}).values() for f in p.get("files", [])]
    entries += list(data.get("models") or [])
    changed = 0
    for entry in entries:
        path = library.folders.find(entry["type"], entry["filename"])
        if path is None:
            console.print(f"[yellow]not on disk:[/] {entry['type']}/{escape(entry['filename'])}")
            continue
        size, sha = path.stat().st_size, library.index.hash_of(path)
        if entry.get("sha256") and entry["sha256"].lower() != sha:
            console.print(
                f"[red]mismatch:[/] {escape(str(path))}: manifest {entry['sha256']}, file {sha}"
            )
            continue
        if entry.get("size") != size or entry.get("sha256") != sha:
            entry["size"], entry["sha256"] = size, sha
            changed += 1
            console.print(f"  {entry['type']}/{escape(entry['filename'])}: {size} {sha}")
    if changed and write:
        manifest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    console.print(f"[green]✓[/] {changed} entries {'updated' if write else 'to update'}")
