"""What a job is, what happens to it, and the errors a job store raises on purpose.

A job's life:

    QUEUED -> RUNNING -> SUCCEEDED
    RUNNING -> QUEUED                  (retryable failure or lost lease, attempts left)
    RUNNING -> FAILED                  (final failure, or attempts exhausted)
    QUEUED -> CANCELLED                (cancelled before anyone claimed it)
    RUNNING -> CANCELLED               (the worker stopped it after a cancel request)

The records are frozen so that a job handed to the dispatcher or the gateway is a snapshot: the
only way to change a job is through the store, which is what keeps the rules above in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from comfyfleet.errors import ComfyfleetError
from comfyfleet.jobs._options import JobOptions
from comfyfleet.jobs._outputs import JobOutput, outputs_to_json
from comfyfleet.jobs._progress import JobProgress


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
"""Statuses a job never leaves: its result (or its failure) is final."""


@dataclass(frozen=True)
class NewJob:
    """A job as submitted. The id is chosen by the client so that a retried submit is harmless."""

    id: str
    workflow: dict[str, Any]
    priority: int = 0
    max_attempts: int = 3
    request_hash: str = ""
    """Hash of the submitted body: the same id with another body is a conflict, not a retry."""
    options: JobOptions = field(default_factory=JobOptions)
    """Settings that travel with the job (webhook, output storage, timeouts)."""
    owner: str | None = None
    """The id of the API key that submitted it; None when keys were off (anonymous)."""
    models: tuple[str, ...] = ()
    """The model files its loader nodes name, as `folder_type/name`: what claims match against
    the models an instance holds (routing by affinity)."""
    max_running: int | None = None
    """How many of its owner's jobs may run at once, this one included (None: no limit). Fixed
    at submit from the key's limit, so a claim needs no lookup of keys."""


@dataclass(frozen=True)
class Job:
    """A snapshot of one stored job."""

    id: str
    workflow: dict[str, Any]
    priority: int
    status: JobStatus
    attempts: int
    max_attempts: int
    created_at: float
    queued_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    lease_until: float | None
    instance: int | None
    prompt_id: str | None
    progress: JobProgress | None
    outputs: list[JobOutput]
    error: dict[str, Any] | None
    cancel_requested: bool
    request_hash: str
    seq: int
    """Insertion order, unique per store: the tie-break for claims and the key of list cursors."""
    options: JobOptions = field(default_factory=JobOptions)
    owner: str | None = None
    """The API key id that submitted it (None: anonymous, or stored before jobs had owners)."""
    models: tuple[str, ...] = ()
    max_running: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["models"] = list(self.models)
        data["options"] = self.options.to_json()
        data["outputs"] = outputs_to_json(self.outputs)
        data["progress"] = None if self.progress is None else self.progress.to_json()
        return data


@dataclass(frozen=True)
class JobEnding:
    """When a finished job was made, started and finished: what throughput and latency
    figures are computed from, without reading its graph or outputs."""

    status: JobStatus
    priority: int
    created_at: float
    started_at: float | None
    finished_at: float

    @property
    def total_s(self) -> float:
        """From submit to end: what the client waited."""
        return max(0.0, self.finished_at - self.created_at)

    @property
    def running_s(self) -> float | None:
        """From the last start to the end; None for a job cancelled before it started."""
        if self.started_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job, in the order it happened (`seq` grows per store)."""

    seq: int
    job_id: str
    kind: str
    data: dict[str, Any]
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinishedJob:
    """A finished job as retention sees it: when it ended and what removing it frees."""

    id: str
    seq: int
    status: JobStatus
    finished_at: float
    events: int
    """How many events it has (they go with it)."""
    bytes: int
    """The UTF-8 size of the JSON its row holds (workflow, options, outputs, error, progress):
    the same figure on every backend."""
    event_bytes: int
    """The same for its events' data."""
    last_event: int
    """The seq of its newest event (0: none): a relay (webhooks) must be past it before the job
    may go, or its last events would never be turned into deliveries."""

    @property
    def cursor(self) -> tuple[float, int]:
        """Where a listing of finished jobs continues after this one."""
        return (self.finished_at, self.seq)


class JobStoreError(ComfyfleetError):
    """Base of the errors a job store raises on purpose."""


class JobNotFound(JobStoreError):
    """No job has that id (it never existed, or it was stored somewhere else)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job '{job_id}'")
        self.job_id = job_id


class JobConflict(JobStoreError):
    """A job with that id exists and was submitted with another body, or by another owner: not
    a retry of it. The message is the same either way, so it tells nothing of the other job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job '{job_id}' already exists with a different request",
            hint="resend the same body to get the existing job, or choose a new id",
        )
        self.job_id = job_id


class QueueFull(JobStoreError):
    """Too many jobs are waiting: refusing new ones is kinder than letting them wait for hours."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the queue is full ({limit} jobs waiting)", hint="retry later, or raise the limit"
        )
        self.limit = limit


class InvalidCursor(JobStoreError):
    """A list cursor that this store did not hand out."""

    def __init__(self, cursor: str) -> None:
        super().__init__(f"invalid cursor '{cursor}'", hint="pass the cursor a listing returned")
        self.cursor = cursor
