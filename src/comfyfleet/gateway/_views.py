"""How a job looks in API answers."""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

from comfyfleet.jobs import Job, JobOptions
from comfyfleet.storage import Storage


def job_view(
    job: Job,
    *,
    queue_position: int | None = None,
    output_dir: Path | None = None,
    inline: bool = False,
    storage: Storage | None = None,
) -> dict[str, Any]:
    """The job as API answers show it. Output URLs of the default store are signed afresh
    (S3 and Azure links expire); the job's webhook URL is never shown, as it may carry a
    token."""
    timings: dict[str, float | None] = {
        "created_at": job.created_at,
        "queued_at": job.queued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "queued_s": None,
        "running_s": None,
    }
    if job.started_at is not None:
        timings["queued_s"] = round(job.started_at - job.queued_at, 4)
        if job.finished_at is not None:
            timings["running_s"] = round(job.finished_at - job.started_at, 4)
    outputs = [o.to_json() for o in job.outputs]
    if storage is not None and (job.options.storage or "default") == "default":
        for output in outputs:
            if isinstance(output.get("key"), str):
                output["url"] = storage.url_for(output["key"])
    if inline and output_dir is not None:
        for output in outputs:
            _inline(output, output_dir / job.id)
    return {
        "id": job.id,
        "status": str(job.status),
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "queue_position": queue_position,
        "instance": job.instance,
        "agent": job.worker,
        "progress": None if job.progress is None else job.progress.to_json(),
        "timings": timings,
        "outputs": outputs,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "options": _shown_options(job.options),
        "urls": {"self": f"/v1/jobs/{job.id}", "cancel": f"/v1/jobs/{job.id}/cancel"},
    }


def _inline(output: dict[str, Any], job_dir: Path) -> None:
    relative = output.get("path")
    if not isinstance(relative, str):
        return
    path = job_dir / relative
    if path.is_file():
        output["content_type"] = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        output["base64"] = base64.b64encode(path.read_bytes()).decode()


def _shown_options(options: JobOptions) -> dict[str, Any]:
    """The options less the webhook's URL (it may hold a secret): only its events show."""
    shown = options.to_json()
    shown.pop("webhook", None)
    if options.webhook is not None:
        shown["webhook"] = {"events": options.webhook.to_json()["events"]}
    return shown
