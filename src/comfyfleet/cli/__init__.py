"""The `comfyfleet` command line: thin commands over the library packages."""

from __future__ import annotations

import sys

import typer

from comfyfleet import __version__
from comfyfleet.cli._console import make_console, print_error
from comfyfleet.cli._doctor import doctor_command
from comfyfleet.cli._export import export_command
from comfyfleet.cli._fleet import down_command, logs_command, status_command, up_command
from comfyfleet.cli._gc import gc_command
from comfyfleet.cli._install import install_command
from comfyfleet.cli._keys import keys_app
from comfyfleet.cli._models import models_app
from comfyfleet.cli._nodes import nodes_app
from comfyfleet.cli._roles import agent_command, gateway_command
from comfyfleet.cli._run import run_command
from comfyfleet.cli._serve import serve_command
from comfyfleet.cli._smoke import smoke_command
from comfyfleet.cli._templates import templates_app
from comfyfleet.errors import ComfyfleetError

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        print(f"comfyfleet {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="comfyfleet",
    help="Run ComfyUI as a production service: install, supervise, serve.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts are plain: [env X], [#SUBDIR] are text, not markup
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """comfyfleet: ComfyUI as a production service."""


app.command("install")(install_command)
app.command("up")(up_command)
app.command("down")(down_command)
app.command("status")(status_command)
app.command("logs")(logs_command)
app.command("smoke")(smoke_command)
app.command("doctor")(doctor_command)
app.command("serve")(serve_command)
app.command("gateway")(gateway_command)
app.command("agent")(agent_command)
app.command("run")(run_command)
app.command("export")(export_command)
app.command("gc")(gc_command)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(nodes_app, name="nodes")
app.add_typer(templates_app, name="templates")


def main() -> None:
    """Entry point: every :class:`ComfyfleetError` becomes a one-line error and exit 1."""
    try:
        # Without standalone mode click returns the code of a `typer.Exit` instead of exiting.
        code = app(standalone_mode=False)
    except ComfyfleetError as exc:
        print_error(make_console(stderr=True), exc)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: say what is wrong, not a traceback
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
