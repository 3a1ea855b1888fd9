"""`comfyfleet templates list | show NAME | new NAME [--from graph.json]`: the templates of the
workspace (shipped, its `templates/` folder, `templates.folders`), read from disk."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from comfyfleet.cli._console import make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.errors import ConfigError

if TYPE_CHECKING:
    from comfyfleet.config import Settings
    from comfyfleet.templates import Parameter, Template, TemplateLibrary

templates_app = typer.Typer(
    name="templates",
    help="Workflow templates: list them, show one's parameters, make a new one.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SKELETON = "txt2img.yaml"
"""What `templates new NAME` starts from without --from: a shipped template that runs."""


def _library(settings: Settings) -> TemplateLibrary:
    from comfyfleet.templates import TemplateLibrary

    return TemplateLibrary.for_workspace(settings.workspace, settings.templates.folders)


def _missing(settings: Settings, template: Template) -> list[str]:
    """The template's model files not on this machine's models root."""
    from comfyfleet.models import ModelFolders

    folders = ModelFolders.from_settings(settings)
    return [
        f"{kind}/{name}"
        for kind, names in template.models.items()
        for name in names
        if kind not in folders.types or folders.find(kind, name) is None
    ]


@templates_app.command("list")
def list_command(
    workspace: WorkspaceOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Every template, whether its models are here, and the files that did not load."""
    settings = settings_from(workspace, config)
    library = _library(settings)
    rows = [(t, _missing(settings, t)) for t in library.all()]
    broken = library.broken()
    if as_json:
        data = {
            "templates": [
                {
                    "name": t.name,
                    "description": t.description,
                    "source": t.source,
                    "models_present": not missing,
                    "missing_models": missing,
                }
                for t, missing in rows
            ],
            "broken": [{"file": b.path, "error": b.message} for b in broken],
        }
        print(json.dumps(data, indent=2))
        return
    console = make_console()
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "MODELS", "DESCRIPTION"):
        table.add_column(column)
    for template, missing in rows:
        models = "[green]here[/]" if not missing else f"[yellow]{len(missing)} missing[/]"
        table.add_row(escape(template.name), models, escape(template.description))
    for entry in broken:
        table.add_row(escape(Path(entry.path).stem), "[red]broken[/]", escape(str(entry)))
    console.print(table)


@templates_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Template name.")],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A template's parameters (type, default, bounds, the inputs they set) and models."""
    from comfyfleet.templates import TemplateNotFound

    settings = settings_from(workspace, config)
    try:
        template = _library(settings).get(name)
    except TemplateNotFound as exc:
        raise ConfigError(exc.message, hint=exc.hint) from exc
    missing = _missing(settings, template)
    if as_json:
        data = {
            "name": template.name,
            "description": template.description,
            "source": template.source,
            "parameters": template.schema(),
            "models": {k: list(v) for k, v in template.models.items()},
            "preset": template.preset,
            "missing_models": missing,
        }
        print(json.dumps(data, indent=2))
        return
    console = make_console()
    console.print(f"[bold]{escape(template.name)}[/]  [dim]{escape(template.source)}[/]")
    if template.description:
        console.print(escape(template.description))
    for key in template.model_keys():
        state = "[yellow]missing[/]" if key in missing else "[green]here[/]"
        console.print(f"  model {escape(key)}: {state}")
    if missing and template.preset:
        console.print(f"  [dim]get them with: comfyfleet models install {template.preset}[/]")
    console.print("parameters:")
    for parameter in template.parameters.values():
        head, sets = _line(parameter)
        console.print(
            f"  [bold]{escape(parameter.name)}[/] {escape(head)} [dim]-> {escape(sets)}[/]"
        )
        if parameter.description:
            console.print(f"      {escape(parameter.description)}")
    console.print(
        f"[dim]run it: comfyfleet run --template {escape(template.name)} -p NAME=VALUE[/]"
    )


def _line(parameter: Parameter) -> tuple[str, str]:
    """`(integer, default 20, 1..150)` and the inputs it sets."""
    parts = [str(parameter.type)]
    if parameter.random:
        parts.append("random by default")
    elif parameter.has_default:
        shown = parameter.default
        parts.append(f"default {_short(repr(shown) if isinstance(shown, str) else str(shown))}")
    else:
        parts.append("required" if parameter.required else "optional")
    low, high = parameter.minimum, parameter.maximum
    if low is not None or high is not None:
        parts.append(f"{'' if low is None else low}..{'' if high is None else high}")
    if parameter.multiple_of is not None:
        parts.append(f"multiple of {parameter.multiple_of}")
    if parameter.choices is not None:
        parts.append(_short("one of " + ", ".join(map(str, parameter.choices)), 240))
    return f"({', '.join(parts)})", ", ".join(str(t) for t in parameter.sets)


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@templates_app.command("new")
def new_command(
    name: Annotated[str, typer.Argument(help="The new template's name.")],
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A saved workflow to make it from: API format, or the editor's own format "
            "(converted with the node schemas of --server).",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Keep every proposed parameter.")
    ] = False,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="A gateway whose node schemas refine the proposals.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="File to write (default: WORKSPACE/templates/NAME.yaml).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a new template: a skeleton to edit, or one made from a saved workflow whose
    parameters are proposed from its widgets (keep or drop each one)."""
    settings = settings_from(workspace, config)
    target = out or settings.workspace / "templates" / f"{name}.yaml"
    if target.exists() and not force:
        raise ConfigError(f"{target} exists", hint="pass --force to replace it")
    text = (
        _skeleton(name, description)
        if source is None
        else _from_graph(name, description, source, yes=yes, server=server)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    console = make_console()
    console.print(f"[green]✓[/] wrote {escape(str(target))}")
    console.print(f"  [dim]try it: comfyfleet run --template {escape(name)}[/]")


def _skeleton(name: str, description: str) -> str:
    from comfyfleet.templates import TemplateFileError, parse_text

    shipped = resources.files("comfyfleet.templates").joinpath("builtin", SKELETON)
    lines = shipped.read_text(encoding="utf-8").splitlines()
    body = [line for line in lines if not line.startswith(("#", "description:"))]
    header = [
        f"# {name}: made from comfyfleet's {SKELETON}. Edit the workflow (an API-format graph)",
        "# and the parameters that set its inputs ('NODE.INPUT').",
        f"name: {name}",
        f"description: {json.dumps(description or 'my template')}",
    ]
    text = "\n".join(header + body) + "\n"
    try:
        parse_text(text, file=f"{name}.yaml", suffix=".yaml", default_name=name)
    except TemplateFileError as exc:
        raise ConfigError(exc.message) from exc
    return text


def _from_graph(name: str, description: str, source: Path, *, yes: bool, server: str | None) -> str:
    from comfyfleet.templates import (
        TemplateFileError,
        propose_parameters,
        template_document,
        template_yaml,
    )

    try:
        workflow = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read workflow {source}: {exc}") from exc
    if not isinstance(workflow, dict):
        raise ConfigError(f"{source}: a workflow is a JSON object of nodes")
    info = _object_info(server)
    workflow = _api_format(workflow, info, source)
    proposals = propose_parameters(workflow, info)
    console = make_console()
    ask = _interactive() and not yes
    kept = []
    for proposal in proposals:
        if not ask:
            console.print(f"  parameter {escape(proposal.describe())}")
            kept.append(proposal)
        elif typer.confirm(f"keep {proposal.describe()}?", default=True):
            kept.append(proposal)
    try:
        document = template_document(workflow, kept, name=name, description=description)
    except TemplateFileError as exc:
        raise ConfigError(
            f"{source}: {exc.problem}" if exc.key is None else f"{source}: {exc.key}: {exc.problem}"
        ) from exc
    return template_yaml(document, header=f"made by comfyfleet templates new from {source.name}")


def _api_format(
    workflow: dict[str, Any], info: dict[str, Any] | None, source: Path
) -> dict[str, Any]:
    """`workflow` in the API format: a file saved by the editor is converted as the editor's
    Run button would, with the fleet's node definitions."""
    from comfyfleet.workflows import ConversionError, convert_workflow, is_ui_workflow

    if not is_ui_workflow(workflow):
        return workflow
    if info is None:
        raise ConfigError(
            f"{source} was saved by the editor: converting it needs the fleet's node definitions",
            hint="pass --server URL of a running gateway (or save it with 'Export (API)')",
        )
    try:
        return convert_workflow(workflow, info)
    except ConversionError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from exc


def _interactive() -> bool:
    """Whether someone can answer keep/drop questions (stdin is a terminal)."""
    return sys.stdin.isatty()


def _object_info(server: str | None) -> dict[str, Any] | None:
    """The node schemas of a gateway's fleet (its ComfyUI API), or None: input names then."""
    if server is None:
        return None
    try:
        answer = httpx.get(f"{server.rstrip('/')}/object_info", timeout=30, trust_env=False)
        answer.raise_for_status()
        info = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfigError(f"cannot read node schemas from {server}: {exc}") from exc
    return info if isinstance(info, dict) else None
