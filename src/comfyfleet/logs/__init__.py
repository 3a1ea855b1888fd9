"""Log records that say which job and which instance they concern, as text or as JSON lines.

Code that works on a job wraps that work in :func:`log_context` (`job_id=`, `instance=`); every
record logged inside it, by any module and in any task started inside it (asyncio copies the
context into new tasks), carries those fields. :func:`configure_logging` sends the process's
records to stderr, one JSON object per line with `--log-format json`: `time`, `level`,
`logger`, `message`, the context's fields and any `extra=` fields, and `exception` with the
traceback where there is one.
"""

from __future__ import annotations

from comfyfleet.logs._context import context_fields, log_context
from comfyfleet.logs._format import ContextFilter, JsonFormatter, TextFormatter
from comfyfleet.logs._settings import LogSettings
from comfyfleet.logs._setup import configure_logging

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "LogSettings",
    "TextFormatter",
    "configure_logging",
    "context_fields",
    "log_context",
]
