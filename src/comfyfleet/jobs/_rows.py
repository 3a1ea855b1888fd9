"""Jobs and events as rows: what the SQL backends (SQLite, PostgreSQL) store and read back.

Both keep the same columns and write structured values as the same compact JSON text, so a job
reads back identically whichever database holds it (and whichever wrote it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import orjson

from comfyfleet.jobs._model import FinishedJob, Job, JobEnding, JobEvent, JobStatus
from comfyfleet.jobs._options import JobOptions
from comfyfleet.jobs._outputs import outputs_from_json, outputs_to_json
from comfyfleet.jobs._progress import JobProgress

JSON_FIELDS = ("workflow", "progress", "outputs", "error", "options")


def mutable_columns(job: Job) -> dict[str, Any]:
    """The columns a change may touch (`cancel_requested` as 0/1: SQLite has no booleans)."""
    return {
        "status": str(job.status),
        "attempts": job.attempts,
        "queued_at": job.queued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "worker": job.worker,
        "lease_until": job.lease_until,
        "instance": job.instance,
        "prompt_id": job.prompt_id,
        "progress": None if job.progress is None else dump(job.progress.to_json()),
        "outputs": dump(outputs_to_json(job.outputs)),
        "error": None if job.error is None else dump(job.error),
        "cancel_requested": int(job.cancel_requested),
    }


def job_from_row(row: Mapping[str, Any]) -> Job:
    fields: dict[str, Any] = dict(row)
    for name in JSON_FIELDS:
        if fields[name] is not None:
            fields[name] = load(fields[name])
    models = fields.get("models") or ()
    fields["models"] = tuple(load(models) if isinstance(models, str) else models)
    fields["options"] = JobOptions.from_json(fields["options"])
    fields["outputs"] = outputs_from_json(fields["outputs"])
    if fields["progress"] is not None:
        fields["progress"] = JobProgress.from_json(fields["progress"])
    fields["status"] = JobStatus(fields["status"])
    fields["cancel_requested"] = bool(fields["cancel_requested"])
    return Job(**fields)


def event_from_row(row: Mapping[str, Any]) -> JobEvent:
    return JobEvent(**(dict(row) | {"data": load(row["data"])}))


def dump(value: Any) -> str:
    """Compact JSON text. orjson first: a large workflow encodes an order of magnitude faster
    (it holds the event loop, or the thread, that much shorter); `json` for what orjson will
    not write (a lone surrogate in an instance's error message)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"))


def load(text: str | bytes) -> Any:
    """The value `dump` wrote (orjson first; `json` for the escapes orjson refuses)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def clock(now: float | None) -> float:
    return time.time() if now is None else now


def stored_bytes(*values: Any) -> int:
    """What JSON values hold as stored text (UTF-8 bytes of their compact JSON; None is not
    stored): the figure the SQL backends compute in their queries, for a backend that stores
    objects."""
    return sum(len(dump(value).encode()) for value in values if value is not None)


def ending_from_row(row: Mapping[str, Any]) -> JobEnding:
    started = row["started_at"]
    return JobEnding(
        status=JobStatus(row["status"]),
        priority=int(row["priority"]),
        created_at=float(row["created_at"]),
        started_at=None if started is None else float(started),
        finished_at=float(row["finished_at"]),
    )


def finished_from_row(row: Mapping[str, Any]) -> FinishedJob:
    """A finished job as retention's `finished_jobs` query of either SQL store describes it."""
    return FinishedJob(
        id=row["id"],
        seq=int(row["seq"]),
        status=JobStatus(row["status"]),
        finished_at=float(row["finished_at"]),
        events=int(row["events"]),
        bytes=int(row["bytes"]),
        event_bytes=int(row["event_bytes"]),
        last_event=int(row["last_event"]),
    )
