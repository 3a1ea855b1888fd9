"""The Jobs pages' view model: job views (`/v1/jobs`, `/v1/jobs/{id}`) as table rows, and one job
as its nodes, its outputs as a gallery, and its error."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.dashboard._format import ago, duration, size, timestamp
from comfyfleet.dashboard._overview import job_label

STATUS_TONES = {
    "queued": "warn",
    "running": "busy",
    "succeeded": "ok",
    "failed": "bad",
    "cancelled": "off",
}
STATUSES = tuple(STATUS_TONES)
_MEDIA = {"image": "image", "video": "video", "audio": "audio"}


@dataclass(frozen=True)
class JobRow:
    id: str
    status: str
    tone: str
    label: str
    instance: str
    created: str
    created_at: str
    queued: str
    running: str
    percent: float | None
    error: str


def job_rows(jobs: list[dict[str, Any]], now: float) -> list[JobRow]:
    return [_row(job, now) for job in jobs]


def _row(job: dict[str, Any], now: float) -> JobRow:
    timings = job.get("timings") or {}
    status = str(job.get("status"))
    progress = job.get("progress") or {}
    fraction = progress.get("fraction") if status == "running" else None
    error = job.get("error") or {}
    return JobRow(
        id=str(job["id"]),
        status=status,
        tone=STATUS_TONES.get(status, "warn"),
        label=job_label(job),
        instance="—" if job.get("instance") is None else str(job["instance"]),
        created=ago(timings.get("created_at"), now),
        created_at=timestamp(timings.get("created_at")),
        queued=duration(timings.get("queued_s")),
        running=duration(timings.get("running_s")),
        percent=round(100 * fraction, 1) if isinstance(fraction, int | float) else None,
        error=str(error.get("message") or "") if isinstance(error, dict) else "",
    )


@dataclass(frozen=True)
class Node:
    id: str
    class_type: str
    state: str
    """`done`, `running` or `waiting` as far as the job's record says; the page's script
    follows the live events."""
    percent: float | None = None


@dataclass(frozen=True)
class OutputItem:
    kind: str
    """`image`, `video`, `audio`, `text` or `file`."""
    url: str | None
    filename: str
    content_type: str
    size: str
    node_id: str
    text: str = ""


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    node_id: str | None
    node_type: str | None
    exception_type: str | None
    traceback: str


@dataclass(frozen=True)
class JobDetail:
    id: str
    status: str
    tone: str
    label: str
    terminal: bool
    attempts: str
    instance: str
    priority: int
    queue_position: int | None
    percent: float | None
    progress_node: str | None
    timings: list[tuple[str, str]]
    nodes: list[Node] = field(default_factory=list)
    outputs: list[OutputItem] = field(default_factory=list)
    error: JobError | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    retry_of: str | None = None


def job_detail(job: dict[str, Any], workflow: dict[str, Any] | None) -> JobDetail:
    status = str(job.get("status"))
    timings = job.get("timings") or {}
    progress = job.get("progress") or {}
    fraction = progress.get("fraction") if status == "running" else None
    options = job.get("options") or {}
    template = options.get("template")
    template = template if isinstance(template, dict) else {}
    params = template.get("params")
    params = params if isinstance(params, dict) else {}
    return JobDetail(
        id=str(job["id"]),
        status=status,
        tone=STATUS_TONES.get(status, "warn"),
        label=job_label(job),
        terminal=status in ("succeeded", "failed", "cancelled"),
        attempts=f"{job.get('attempts', 0)} of {job.get('max_attempts', 0)}",
        instance="—" if job.get("instance") is None else str(job["instance"]),
        priority=int(job.get("priority") or 0),
        queue_position=job.get("queue_position"),
        percent=round(100 * fraction, 1) if isinstance(fraction, int | float) else None,
        progress_node=None if progress.get("node") is None else str(progress["node"]),
        timings=[
            ("Submitted", timestamp(timings.get("created_at"))),
            ("Started", timestamp(timings.get("started_at"))),
            ("Finished", timestamp(timings.get("finished_at"))),
            ("Waited in the queue", duration(timings.get("queued_s"))),
            ("Ran", duration(timings.get("running_s"))),
        ],
        nodes=_nodes(workflow or {}, status, progress),
        outputs=[_output(o) for o in job.get("outputs") or [] if isinstance(o, dict)],
        error=_error(job.get("error")),
        params=[(str(k), _shown(v)) for k, v in params.items()],
        retry_of=options.get("retry_of"),
    )


def _node_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def _nodes(workflow: dict[str, Any], status: str, progress: dict[str, Any]) -> list[Node]:
    current = None if progress.get("node") is None else str(progress["node"])
    fraction = progress.get("fraction")
    nodes = []
    for node_id in sorted(workflow, key=_node_key):
        spec = workflow[node_id]
        class_type = str(spec.get("class_type")) if isinstance(spec, dict) else "?"
        percent: float | None
        if status == "succeeded":
            state, percent = "done", 100.0
        elif status == "running" and node_id == current:
            state = "running"
            percent = round(100 * fraction, 1) if isinstance(fraction, int | float) else None
        else:
            state, percent = "waiting", None
        nodes.append(Node(node_id, class_type, state, percent))
    return nodes


def _output(output: dict[str, Any]) -> OutputItem:
    filename = str(output.get("filename") or output.get("path") or "")
    content_type = str(
        output.get("content_type")
        or mimetypes.guess_type(filename)[0]
        or "application/octet-stream"
    )
    if output.get("kind") == "text":
        kind = "text"
    else:
        kind = _MEDIA.get(content_type.split("/", 1)[0], "file")
    return OutputItem(
        kind=kind,
        url=output.get("url"),
        filename=filename,
        content_type=content_type,
        size=size(output.get("size")),
        node_id=str(output.get("node_id") or ""),
        text=str(output.get("text") or ""),
    )


def _error(error: Any) -> JobError | None:
    """A job's error: code and message, with the node, its class, the exception and
    ComfyUI's traceback beside them where the error has them."""
    if not isinstance(error, dict):
        return None
    trace = error.get("traceback")
    return JobError(
        code=str(error.get("code") or "error"),
        message=str(error.get("message") or ""),
        node_id=_optional(error.get("node_id")),
        node_type=_optional(error.get("node_type")),
        exception_type=_optional(error.get("exception_type")),
        traceback="".join(str(line) for line in trace) if isinstance(trace, list) else "",
    )


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 300 else text[:297] + "..."
