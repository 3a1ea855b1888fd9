"""How a fleet job looks to a Comfy API v2 client: the contract's `Job`, `Output` and `Progress`.

The fleet's job record is the one source; this module only renames and reshapes it:

- status: `cancelled` is spelled `canceled`, and a running job with a cancel requested is
  `canceling` (the contract's intermediate state). `expired` is never reported: the fleet keeps
  every job, so a finished job stays readable, and `expires_at` is a sliding lower bound
  (`retention_s` from now or from creation, whichever is later) that is never in the past.
- outputs are assets: each gets the id `<job id>:<index>`, which the v2 content route serves
  (files from the output folder, with Range; texts as text/plain), and absolute URLs built from
  the request's base URL, as the contract asks ("follow links, don't build URLs").
- `hash` of an output is null (the contract's "not computed yet"): the fleet records SHA-256
  digests, and the contract's hash is BLAKE3.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from comfyfleet.jobs import Job, JobOutput, JobStatus

OUTPUT_SEPARATOR = ":"
"""Between the job id and the output's index in an output id (job ids never hold one)."""

_KINDS = {
    "images": "image",
    "gifs": "video",
    "videos": "video",
    "video": "video",
    "audio": "audio",
    "text": "text",
    "files": "file",
    "latents": "latent",
}
_MEDIA_KINDS = (("image/", "image"), ("video/", "video"), ("audio/", "audio"), ("text/", "text"))


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def v2_status(job: Job) -> str:
    if job.status == JobStatus.CANCELLED:
        return "canceled"
    if job.status == JobStatus.RUNNING and job.cancel_requested:
        return "canceling"
    return str(job.status)


def output_id(job_id: str, index: int) -> str:
    return f"{job_id}{OUTPUT_SEPARATOR}{index}"


def split_output_id(ident: str) -> tuple[str, int] | None:
    """(job id, index) of an output id; None for anything else (an uploaded asset's id)."""
    job_id, sep, index = ident.rpartition(OUTPUT_SEPARATOR)
    if not sep or not job_id or not index.isascii() or not index.isdigit() or len(index) > 6:
        return None
    return job_id, int(index)


def v2_outputs(job: Job, base: str, now: float, retention_s: float) -> list[dict[str, Any]]:
    """The job's outputs as the contract's `Output`s (text outputs too: nothing is dropped)."""
    if job.status != JobStatus.SUCCEEDED:
        return []
    return [
        v2_output(job, index, item, base, now, retention_s)
        for index, item in enumerate(job.outputs)
    ]


def v2_output(
    job: Job, index: int, item: JobOutput, base: str, now: float, retention_s: float
) -> dict[str, Any]:
    ident = output_id(job.id, index)
    text = item.text
    if text is not None:
        content_type, size, name = "text/plain; charset=utf-8", len(text.encode()), "text.txt"
    else:
        name = item.filename or f"output-{index}"
        content_type = item.content_type or _guess(name)
        size = item.size or 0
    return {
        "node_id": item.node_id or "",
        "name": name,
        "type": output_type(item.kind or "", content_type),
        "content_type": content_type,
        "size_bytes": size,
        "id": ident,
        "hash": None,
        "url": f"{base}/api/v2/assets/{ident}/content",
        "url_expires_at": iso(now + retention_s),
        "job_id": job.id,
    }


def output_type(kind: str, content_type: str) -> str:
    if kind in _KINDS:
        return _KINDS[kind]
    for prefix, name in _MEDIA_KINDS:
        if content_type.startswith(prefix):
            return name
    return "file"


def _guess(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def v2_error_of(job: Job) -> dict[str, Any] | None:
    """The contract's `JobError` of a failed job (a ComfyUI node failure is its
    `node_execution_error`)."""
    error = job.error
    if job.status != JobStatus.FAILED or not isinstance(error, dict):
        return None
    code = str(error.get("code") or "error")
    return {
        "code": "node_execution_error" if code == "node_error" else code,
        "message": str(error.get("message") or code),
        "node_id": _text(error.get("node_id")),
        "class_type": _text(error.get("node_type")),
        "traceback": None,
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def metrics(job: Job, now: float) -> dict[str, int | None]:
    def ms(start: float | None, end: float | None) -> int | None:
        if start is None or end is None:
            return None
        return max(0, math.floor((end - start) * 1000))

    started = job.started_at
    ended = job.finished_at if job.terminal else now
    return {
        "queue_ms": ms(job.queued_at, started if started is not None else ended),
        "execution_ms": ms(started, ended),
    }


def v2_job(
    job: Job,
    base: str,
    *,
    now: float,
    retention_s: float,
    queue_position: int | None = None,
    progress: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The contract's `Job`, every field present (null where the contract allows it)."""
    status = v2_status(job)
    url = f"{base}/api/v2/jobs/{job.id}"
    view: dict[str, Any] = {
        "id": job.id,
        "status": status,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.finished_at) if job.terminal else None,
        "expires_at": iso(max(now, job.created_at) + retention_s),
        "queue_position": queue_position if status == "queued" else None,
        "progress": progress,
        "outputs": v2_outputs(job, base, now, retention_s),
        "error": v2_error_of(job),
        "metrics": metrics(job, now),
        "urls": {"self": url, "events": f"{url}/events", "cancel": f"{url}/cancel"},
        # what the SDK's job summaries read in a listing
        "create_time": iso(job.created_at),
        "update_time": iso(job.finished_at or job.started_at or job.queued_at),
    }
    labels = job.options.metadata
    if labels is not None:
        view["metadata"] = dict(labels)
    if job.priority:
        view["priority"] = job.priority
    return view
