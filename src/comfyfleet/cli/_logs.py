"""What the long-running commands print: rich lines for a person, or JSON lines for a collector.

With `--log-format json` everything the process says goes to stderr as one JSON object per line
(`comfyfleet.logs`): the instance transitions and the listening address become log records too,
with an `instance` field, so that no plain line breaks a collector's parser.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import typer
from rich.markup import escape

from comfyfleet.cli._console import make_console
from comfyfleet.config import Settings
from comfyfleet.logs import configure_logging
from comfyfleet.supervise import InstanceEvent

LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="text (default) or json: one JSON object per line on stderr, with job_id and "
        "instance on the lines that concern one.",
        show_default=False,
    ),
]
LogLevelOpt = Annotated[
    str | None,
    typer.Option(
        "--log-level",
        help="debug, info, warning or error (default: info for json; warnings for text).",
        show_default=False,
    ),
]

log = logging.getLogger("comfyfleet.cli")
fleet_log = logging.getLogger("comfyfleet.supervise")


def log_flags(log_format: str | None, log_level: str | None) -> dict[str, str | None]:
    """The `log` section the two flags set."""
    return {"format": log_format, "level": log_level}


class RoleOutput:
    """The callbacks a role reports through, printing or logging as the settings say."""

    def __init__(self, settings: Settings) -> None:
        configure_logging(settings.log)
        self.json = settings.log.format == "json"
        self.console = make_console()

    def on_event(self, event: InstanceEvent) -> None:
        if self.json:
            extra = {"instance": event.instance, "state": str(event.new)}
            fleet_log.info("%s", event.describe(), extra=extra)
            return
        self.console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/] instance {event.instance} "
            f"{event.new} [dim]{escape(event.reason)}[/]"
        )

    def on_listening(self, url: str) -> None:
        if self.json:
            log.info("gateway listening on %s", url, extra={"url": url})
            return
        self.console.print(f"gateway listening on [bold]{url}[/] (API docs at {url}/docs)")

    def stopped(self) -> None:
        if self.json:
            log.info("stopped")
        else:
            self.console.print("stopped")
