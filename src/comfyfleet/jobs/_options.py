"""A job's options: the settings that travel with it from submit to the packages that act on them.

The gateway and the facades write them (webhook, storage target, conversion, timeouts, ComfyUI's
`extra_data`, labels, the template or install a job comes from); the dispatcher, the lane, the
output publisher, the webhook relay and the views read them. They are stored as one JSON object
(the `options` column, the `options` of a job's API view), and this module is the one place that
turns that object into :class:`JobOptions` (`from_json`) and back (`to_json`), so every reader
uses attributes and a misspelt key is a type error rather than a silent `None`.

Stored rows are read tolerantly: a key this version does not know, or a known key whose value
has a shape it does not expect (a row written before the check existed), is kept as it is in
`others` and written back unchanged, so reading and rewriting a job never loses anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class WebhookOption:
    """Where a job's events are posted: `url`, for the event types in `events`."""

    url: str
    events: tuple[str, ...] | None
    """None: the configured default events."""

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "events": None if self.events is None else list(self.events)}


@dataclass(frozen=True)
class Timeouts:
    """A job's own limits in seconds (None: the configured default applies)."""

    queued_s: float | None = None
    running_s: float | None = None

    def to_json(self) -> dict[str, float]:
        out = {"queued_s": self.queued_s, "running_s": self.running_s}
        return {name: value for name, value in out.items() if value is not None}


@dataclass(frozen=True)
class Conversion:
    """The image format a job's image outputs are converted to before they are stored."""

    format: str
    quality: int = 85

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "quality": self.quality}


@dataclass(frozen=True)
class JobOptions:
    """See the module docstring. Every field is optional; `JobOptions()` is a job without any."""

    webhook: WebhookOption | None = None
    storage: str | None = None
    """The output store the job names (None: the default one)."""
    convert: Conversion | None = None
    timeouts: Timeouts | None = None
    comfyui: Mapping[str, Any] | None = None
    """What the ComfyUI facade recorded of the request (`client_id`, `number`)."""
    extra_data: Mapping[str, Any] | None = None
    """ComfyUI's `extra_data` of the prompt, sent with it to the instance."""
    metadata: Mapping[str, str] | None = None
    """The labels a Comfy API v2 client attached."""
    template: Mapping[str, Any] | None = None
    """The template the job was made from: `{"name", "params"}`."""
    openai: Mapping[str, Any] | None = None
    """The OpenAI images request it answers: `{"endpoint", "user"?}`."""
    install_preset: str | None = None
    """A model install job: the preset it installs (the job has no graph)."""
    install_model: Mapping[str, Any] | None = None
    """A model install job: the file it downloads (`source`, `type`, `filename`, ...)."""
    retry_of: str | None = None
    """The job this one retries."""
    others: Mapping[str, Any] = field(default_factory=dict)
    """Keys this version does not know, and known keys whose stored value did not parse."""

    @property
    def installs(self) -> bool:
        """Whether this is a model install job rather than one that runs a graph."""
        return self.install_preset is not None or self.install_model is not None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> JobOptions:
        """The options a stored or submitted JSON object describes (None: no options)."""
        if not data:
            return _NONE
        known: dict[str, Any] = {}
        others: dict[str, Any] = {}
        for name, value in data.items():
            parse = _PARSERS.get(name)
            parsed = None if parse is None or value is None else parse(value)
            if parsed is None:
                others[name] = value
            else:
                known[name] = parsed
        return cls(**known, others=others)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored and shown: known keys in a fixed order, then the others."""
        out: dict[str, Any] = {}
        for name in _ORDER:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to_json() if hasattr(value, "to_json") else _plain(value)
            elif name in self.others:
                out[name] = self.others[name]  # kept as stored, in its place
        for name, value in self.others.items():
            if name != "retry_of":
                out.setdefault(name, value)
        if self.retry_of is not None:
            out["retry_of"] = self.retry_of
        elif "retry_of" in self.others:
            out["retry_of"] = self.others["retry_of"]
        return out

    def but(self, **changes: Any) -> JobOptions:
        """These options with some fields replaced (the facades add theirs to the gateway's)."""
        return replace(self, **changes)


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _webhook(value: Any) -> WebhookOption | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("url"), str):
        return None
    events = value.get("events")
    if set(value) != {"url", "events"}:
        return None
    if events is None:
        return WebhookOption(value["url"], None)
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        return None
    return WebhookOption(value["url"], tuple(events))


def _seconds(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def _timeouts(value: Any) -> Timeouts | None:
    if not isinstance(value, Mapping) or set(value) - {"queued_s", "running_s"}:
        return None
    if not all(_seconds(seconds) for seconds in value.values()):
        return None
    queued, running = value.get("queued_s"), value.get("running_s")
    return Timeouts(
        None if queued is None else float(queued), None if running is None else float(running)
    )


def _convert(value: Any) -> Conversion | None:
    if not isinstance(value, Mapping) or set(value) - {"format", "quality"}:
        return None
    fmt, quality = value.get("format"), value.get("quality", 85)
    if not isinstance(fmt, str) or isinstance(quality, bool) or not isinstance(quality, int):
        return None
    return Conversion(fmt, quality)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) else None


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "webhook": _webhook,
    "storage": _text,
    "convert": _convert,
    "timeouts": _timeouts,
    "comfyui": _mapping,
    "extra_data": _mapping,
    "metadata": _mapping,
    "template": _mapping,
    "openai": _mapping,
    "install_preset": _text,
    "install_model": _mapping,
    "retry_of": _text,
}
"""How each known key's stored value becomes its field (None: not the expected shape)."""

_ORDER = tuple(name for name in _PARSERS if name != "retry_of")
"""The order `to_json` writes known keys in: the order the gateway, then a facade, write them;
`retry_of` goes last, after everything copied from the job retried."""

_NONE = JobOptions()
