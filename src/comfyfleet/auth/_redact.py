"""Keeping API keys out of logs.

Nothing in comfyfleet logs a key: the middleware logs key ids only, and uvicorn's access log holds
the request line, never headers. This filter is the second line, for what we do not control (a
library that logs a request's headers, an exception that prints one): attached to a log handler,
it rewrites every `cf_<id>_<secret>` into `cf_<id>_***`, and a token-like word (16+ characters)
after `Bearer` into `***`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

_KEY = re.compile(r"\b(cf_[a-z0-9]{8}_)[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"(?i)\b(bearer[ .:=]\s*)[^\s,;'\"*]{16,}")
MASK = "***"


def redact(text: str) -> str:
    """`text` with the secret part of every API key masked."""
    return _BEARER.sub(rf"\g<1>{MASK}", _KEY.sub(rf"\g<1>{MASK}", text))


def _redact_arg(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value  # keeps `%d` and friends working
    text = str(value)
    masked = redact(text)
    return value if masked == text else masked


class RedactKeys(logging.Filter):
    """A logging filter that masks API keys in a record's message and arguments.

    Attach it to handlers (`handler.addFilter(RedactKeys())`): a filter on a logger does not see
    the records its children propagate. The arguments keep their shape (uvicorn's access
    formatter unpacks them), only strings and objects whose text holds a key change.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redact_arg(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: _redact_arg(v) for k, v in args.items()}
        return True
