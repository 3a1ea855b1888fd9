"""Formatting records: one JSON object per line, or text with the context's fields at the end.

The filter copies the context's fields onto each record when it is made (in the task that logs
it), so a handler that formats later, or elsewhere, still has them. Fields passed with `extra=`
win over the context's.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from comfyfleet.logs._context import context_fields

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
"""What every record has: anything else on a record was added (`extra=`, the context)."""


class ContextFilter(logging.Filter):
    """Stamps each record with the fields of :func:`log_context` in force where it is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context_fields().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def added_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's fields beyond the standard ones, in the order they were set."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...fields, "exception"?}` on one line. Times are
    UTC, ISO 8601 with milliseconds; values JSON cannot carry are written as text."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        data: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in added_fields(record).items():
            data.setdefault(name, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger: message [job_id=... instance=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = added_fields(record)
        if not fields:
            return text
        return text + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
