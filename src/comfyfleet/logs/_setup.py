"""Pointing the process's log records at stderr, in the chosen format.

Called once by the long-running commands (`serve`, `gateway`, `agent`) before they start: the
logging module is the one piece of process-wide state, and only a program's entry point may set
it. Libraries that log every request at `info` (httpx names each URL, and a webhook URL may
carry a token) are held at `warning` whatever the level. Python's warnings are logged as
records (logger `py.warnings`) rather than printed.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from comfyfleet.logs._format import ContextFilter, JsonFormatter, TextFormatter
from comfyfleet.logs._settings import LogSettings

_QUIET = ("httpx", "httpcore", "websockets", "asyncio")


def configure_logging(settings: LogSettings, *, stream: TextIO | None = None) -> bool:
    """Install the handler `settings` ask for; False (and nothing changed) for the default
    text output, which Python's last-resort handler already gives."""
    if settings.format == "text" and settings.level is None:
        return False
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel((settings.level or "info").upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # Python's warnings become records too: no stray lines
    return True
