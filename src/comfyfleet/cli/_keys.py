"""`comfyfleet keys create | list | revoke`: the gateway's API keys.

Thin commands over :class:`comfyfleet.auth.KeyStore`. `create` is the only moment a key's text
exists outside its owner: it is printed once, on stdout (alone with `--quiet`, for scripts), and
kept nowhere but as a digest.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from comfyfleet.auth import (
    DEFAULT_SCOPES,
    SCOPES,
    AuthSettings,
    KeyRecord,
    KeyStore,
    open_key_store,
    parse_scopes,
    sorted_scopes,
)
from comfyfleet.cli._console import make_console
from comfyfleet.cli._options import ConfigOpt, WorkspaceOpt, settings_from
from comfyfleet.config import Settings
from comfyfleet.errors import WorkspaceError
from comfyfleet.workspace import Workspace

_DAY_S = 86400.0
_STYLE = {"active": "green", "revoked": "red", "expired": "yellow"}
_DEFAULT = ",".join(scope for scope in SCOPES if scope in DEFAULT_SCOPES)

keys_app = typer.Typer(
    name="keys",
    help="API keys for the gateway: create, list, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts are plain: [env X], [#SUBDIR] are text, not markup
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _auth_settings(settings: Settings) -> AuthSettings:
    # `auth` is read with getattr so that these commands work whether or not the settings
    # schema has the section yet; without it the defaults apply.
    value = getattr(settings, "auth", None)
    return value if isinstance(value, AuthSettings) else AuthSettings()


def _open(workspace: WorkspaceOpt, config: ConfigOpt) -> tuple[KeyStore, AuthSettings]:
    settings = settings_from(workspace, config)
    auth = _auth_settings(settings)
    ws = Workspace.from_settings(settings)
    if auth.keys_file is None and not ws.root.is_dir():
        raise WorkspaceError(
            f"workspace {ws.root} does not exist",
            hint="pass the workspace with --workspace, or run `comfyfleet install` first",
        )
    return open_key_store(auth, ws.state_dir), auth


def _scopes(record: KeyRecord) -> str:
    return ",".join(sorted_scopes(record.scopes))


def _when(stamp: float | None) -> str:
    """A time in UTC, to the minute."""
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M")


@keys_app.command("create")
def create_command(
    name: Annotated[
        str, typer.Option("--name", "-n", help="Who or what uses the key, e.g. ci-pipeline.")
    ],
    expires_in: Annotated[
        float | None,
        typer.Option(
            "--expires-in",
            help="Days until the key stops working (default: never).",
            show_default=False,
        ),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            "-s",
            help=f"What the key may do: {', '.join(SCOPES)}; repeat it or give a comma list "
            f"(default: {_DEFAULT}).",
            show_default=False,
        ),
    ] = None,
    max_running: Annotated[
        int | None,
        typer.Option(
            "--max-running",
            min=1,
            help="Jobs of this key running at once, at most (default: serve.max_running_per_key).",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print the key alone, for scripts.")
    ] = False,
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key and print it: this is the only time it is shown.

    Scopes: `submit` sends jobs and assets and cancels the key's own jobs; `read` reads the
    key's own jobs, events, outputs and assets; `admin` does everything, for every key's jobs."""
    scopes = DEFAULT_SCOPES if not scope else parse_scopes(scope)
    store, auth = _open(workspace, config)
    lifetime = None if expires_in is None else expires_in * _DAY_S
    issued = store.create(name, expires_in_s=lifetime, scopes=scopes, max_running=max_running)
    if quiet:
        print(issued.token, flush=True)
        return
    err = make_console(stderr=True)
    record = issued.record
    expires = "never" if record.expires_at is None else f"{_when(record.expires_at)} UTC"
    err.print(
        f"[green]✓[/] created API key [bold]{record.id}[/] ({escape(record.name)}), "
        f"scopes: {_scopes(record)}, expires: {expires}"
    )
    print(issued.token, flush=True)  # plain print: the key must never be wrapped or styled
    err.print(
        "[dim]Store it now: it is not shown again. "
        "Clients send it as 'Authorization: Bearer <key>'.[/]"
    )
    if not auth.enabled:
        err.print(
            "[yellow]note:[/] auth is not enabled in the settings, so the gateway does not ask "
            "for keys yet (set auth.enabled: true, or COMFYFLEET_AUTH__ENABLED=1)"
        )


@keys_app.command("list")
def list_command(
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the keys (id, name, dates, status, last characters); never the keys themselves."""
    store, _ = _open(workspace, config)
    records = store.records()
    now = time.time()
    if as_json:
        print(json.dumps({"keys": [r.public_view(now) for r in records]}, indent=2))
        return
    console = make_console()
    if not records:
        console.print(f"no API keys in {store.path} (create one with `comfyfleet keys create`)")
        return
    console.print(_table(records, now))


def _table(records: list[KeyRecord], now: float) -> Table:
    table = Table(caption="times in UTC")
    for column in ("id", "name", "scopes", "created", "expires", "status", "hint"):
        table.add_column(column, no_wrap=column != "name", overflow="fold")
    for record in records:
        status = record.status(now)
        table.add_row(
            record.id,
            escape(record.name),
            _scopes(record),
            _when(record.created_at),
            _when(record.expires_at),
            f"[{_STYLE[status]}]{status}[/]",
            f"…{escape(record.hint)}",
        )
    return table


@keys_app.command("revoke")
def revoke_command(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id, from `keys list`.")],
    workspace: WorkspaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key: running gateways refuse it from their next request on."""
    store, _ = _open(workspace, config)
    before = store.get(key_id)
    record = store.revoke(key_id)
    console = make_console()
    if before.revoked:
        console.print(f"key {record.id} ({escape(record.name)}) was already revoked")
        return
    console.print(f"[green]✓[/] revoked key {record.id} ({escape(record.name)})")
