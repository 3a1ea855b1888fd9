"""The fields of the work under way (job id, instance), in a context variable.

A context variable rather than arguments threaded through every call: the record of a model
download three calls below the lane, or of a task the lane started, still names its job. Each
asyncio task has its own copy, so two jobs handled at once in two tasks never mix their fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

_NOTHING: Mapping[str, object] = MappingProxyType({})
_FIELDS: ContextVar[Mapping[str, object]] = ContextVar("comfyfleet_log_fields", default=_NOTHING)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add `fields` (None values are left out) to every record logged inside the block."""
    added = {name: value for name, value in fields.items() if value is not None}
    token = _FIELDS.set(MappingProxyType({**_FIELDS.get(), **added}))
    try:
        yield
    finally:
        _FIELDS.reset(token)


def context_fields() -> Mapping[str, object]:
    """The fields in force here (read-only)."""
    return _FIELDS.get()
