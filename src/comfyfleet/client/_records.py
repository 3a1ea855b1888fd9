"""What the server's answers become: small frozen records with the fields a program uses, and
`raw`, the whole answer, for anything newer than this client.

Each record is built by `from_dict`, which tolerates missing fields (an older server) and
unknown ones (a newer server) alike, so a client release is not tied to one server release.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Self

from comfyfleet.client._errors import ComfyfleetClientError

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
"""Statuses a job never leaves."""


@dataclass(frozen=True)
class _Record:
    """A record read from an answer's fields of the same names: a field the answer lacks keeps
    its default, and the whole answer stays in `raw` (fields newer than this client too)."""

    raw: dict[str, Any] = field(default_factory=dict, repr=False, kw_only=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise ComfyfleetClientError(f"the server sent {type(data).__name__}, not an object")
        names = {f.name for f in fields(cls)} - {"raw"}
        try:
            return cls(**{k: v for k, v in data.items() if k in names}, raw=data)
        except TypeError as exc:
            raise ComfyfleetClientError(f"the server's answer lacks a field: {exc}") from exc


@dataclass(frozen=True)
class JobRecord(_Record):
    """A job as the server last described it (`GET /v1/jobs/{id}`)."""

    id: str
    status: str
    """queued, running, succeeded, failed or cancelled."""
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 0
    queue_position: int | None = None
    instance: int | None = None
    progress: dict[str, Any] | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class Event:
    """One live event of a job (`GET /v1/jobs/{id}/events`).

    `type` is `status`, `started`, `executing`, `progress`, `executed`, `output`, `error`,
    `preview` (with `previews=True`) or a newer kind; `data` is its payload, e.g. for `progress`
    `{"node", "step", "steps", "value"}` with `value` from 0 to 1. `id` resumes a stream after
    this event (`job.events(after=event.id)`)."""

    type: str
    job_id: str
    data: dict[str, Any]
    seq: int | None = None
    id: str | None = None

    @property
    def final(self) -> bool:
        """The job's last event: its final status."""
        return self.type == "status" and self.data.get("status") in FINAL_STATUSES

    @classmethod
    def from_message(cls, name: str, payload: dict[str, Any], event_id: str | None) -> Event:
        data = payload.get("data")
        seq = payload.get("seq")
        return cls(
            type=str(payload.get("event") or name),
            job_id=str(payload.get("job_id") or ""),
            data=data if isinstance(data, dict) else {},
            seq=seq if isinstance(seq, int) else None,
            id=event_id,
        )


@dataclass(frozen=True)
class Asset(_Record):
    """An uploaded input file. Put `ref` (`asset:<id>`) in a loader's input, or in a template
    parameter of type image."""

    id: str
    name: str = ""
    """The file's name inside ComfyUI's input folder."""
    content_type: str = ""
    size: int = 0
    sha256: str = ""
    filename: str | None = None
    """The name it was uploaded under."""

    @property
    def ref(self) -> str:
        return f"asset:{self.id}"


@dataclass(frozen=True)
class Preset(_Record):
    """A model preset (`GET /v1/presets`): named model files, and whether all are on disk."""

    name: str
    description: str = ""
    complete: bool = False
    size: int | None = None
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ModelFile(_Record):
    """A model file on the server's disk (`GET /v1/models`); `name` is what a loader's input
    names."""

    folder_type: str
    name: str
    size: int = 0
    sha256: str | None = None


@dataclass(frozen=True)
class Template(_Record):
    """A workflow template (`GET /v1/templates`): run it by name with `params`."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    """The JSON Schema of its parameters (`properties`, `required`)."""
    models: dict[str, Any] = field(default_factory=dict)
    models_present: bool = True
    missing_models: list[Any] = field(default_factory=list)

    @property
    def required(self) -> list[str]:
        """The parameters a job must give (they have no default)."""
        return [str(name) for name in self.parameters.get("required") or []]
