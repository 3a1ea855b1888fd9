"""ComfyUI's views of its queue and history, over the fleet's store: `/queue`, `/history`, and
the jobs API of current ComfyUI releases (`/api/jobs`).

What `queue_running` lists when several instances run at once: ComfyUI runs one prompt at a time,
and clients count on it (some assert `len(queue_running) <= 1`, most look for their prompt in
either list). So `queue_running` holds the prompt that started first, and the others running
elsewhere on the fleet come first in `queue_pending`, in the order they started, followed by the
waiting prompts in the order the fleet will take them (priority, then age). Every prompt is in
exactly one of the two lists, and a client that waits for its prompt to leave them waits right.
`/api/jobs` (status `in_progress`) and `/v1/jobs` show every running prompt as running. The
history is every finished job, prompts and `/v1` jobs alike, oldest first as ComfyUI orders it;
`max_items` keeps the newest.

Each list reads at most `MAX_LISTED` jobs: ComfyUI keeps 10,000 history items, and a queue
longer than that is read page by page from `/v1/jobs`, not from one answer.
"""

from __future__ import annotations

from typing import Any

from comfyfleet.facades.comfyui._shapes import (
    client_id_of,
    history_entry,
    ms,
    node_outputs,
    number_of,
    queue_item,
)
from comfyfleet.gateway import Caller, visible_job
from comfyfleet.jobs import TERMINAL, Job, JobNotFound, JobStatus, JobStore

MAX_LISTED = 10_000
_PAGE = 500
JOB_STATES = {
    JobStatus.QUEUED: "pending",
    JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
"""The jobs API's status names (ComfyUI's own four, and `cancelled`, which it shows as
`failed`: a cancelled prompt is not a failed one, and a client filtering for failures should
not get interrupted work)."""


async def visible(
    store: JobStore, caller: Caller, status: JobStatus | None, limit: int = MAX_LISTED
) -> list[Job]:
    """Up to `limit` jobs the caller may see, newest first."""
    found: list[Job] = []
    cursor = None
    while len(found) < limit:
        page, cursor = await store.list_jobs(
            status=status,
            limit=min(_PAGE, limit - len(found)),
            cursor=cursor,
            owner=caller.list_filter,
        )
        found.extend(page)
        if cursor is None:
            break
    return found


async def queue_view(store: JobStore, caller: Caller, outputs: frozenset[str]) -> dict[str, Any]:
    running = await visible(store, caller, JobStatus.RUNNING)
    running.sort(key=lambda job: (job.started_at or 0.0, job.seq))
    pending = await visible(store, caller, JobStatus.QUEUED)
    pending.sort(key=lambda job: (-job.priority, job.seq))
    waiting = running[1:] + pending
    return {
        "queue_running": [queue_item(job, outputs) for job in running[:1]],
        "queue_pending": [queue_item(job, outputs) for job in waiting],
    }


async def history_view(
    store: JobStore, caller: Caller, outputs: frozenset[str], max_items: int | None, offset: int
) -> dict[str, Any]:
    wanted = MAX_LISTED if max_items is None else min(max_items + offset, MAX_LISTED)
    finished: list[Job] = []
    cursor = None
    while len(finished) < wanted:
        page, cursor = await store.list_jobs(limit=_PAGE, cursor=cursor, owner=caller.list_filter)
        finished.extend(job for job in page if job.status in TERMINAL)
        if cursor is None:
            break
    chosen = finished[offset:wanted]
    return {job.id: history_entry(job, outputs) for job in reversed(chosen)}


def job_summary(job: Job, *, full: bool, outputs: frozenset[str]) -> dict[str, Any]:
    """A job as the jobs API shows it."""
    grouped = node_outputs(job)
    count = sum(len(items) for kinds in grouped.values() for items in kinds.values())
    summary: dict[str, Any] = {
        "id": job.id,
        "status": JOB_STATES[job.status],
        "priority": number_of(job),
        "create_time": ms(job.created_at),
        "execution_start_time": ms(job.started_at),
        "execution_end_time": ms(job.finished_at) if job.terminal else None,
        "outputs_count": count,
    }
    preview = _preview(grouped)
    if preview is not None:
        summary["preview_output"] = preview
    if job.status == JobStatus.FAILED and job.error:
        summary["execution_error"] = job.error
    if full:
        entry = history_entry(job, outputs) if job.terminal else None
        summary["outputs"] = grouped
        summary["execution_status"] = entry["status"] if entry else None
        summary["workflow"] = {"prompt": job.workflow, "extra_data": queue_item(job, outputs)[3]}
        summary["client_id"] = client_id_of(job)
    return {key: value for key, value in summary.items() if value is not None}


def _preview(grouped: dict[str, dict[str, list[Any]]]) -> dict[str, Any] | None:
    for node, kinds in grouped.items():
        for kind, items in kinds.items():
            for item in items:
                if kind in ("images", "video", "audio", "gifs") and isinstance(item, dict):
                    return {**item, "nodeId": node, "mediaType": kind}
    return None


def sort_jobs(jobs: list[dict[str, Any]], sort_by: str, order: str) -> list[dict[str, Any]]:
    def key(job: dict[str, Any]) -> float:
        if sort_by == "execution_duration":
            start, end = job.get("execution_start_time"), job.get("execution_end_time")
            return float(end - start) if start and end else 0.0
        return float(job.get("create_time") or 0)

    return sorted(jobs, key=key, reverse=order == "desc")


async def find(store: JobStore, job_id: str, caller: Caller) -> Job | None:
    """The job if the caller may see it (None otherwise, or when there is none)."""
    try:
        return await visible_job(store, job_id, caller)
    except JobNotFound:
        return None


def _ids(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


async def delete_queued(store: JobStore, caller: Caller, body: dict[str, Any]) -> None:
    """`POST /queue`: `clear` cancels every waiting prompt of the caller, `delete` the named
    ones that still wait (a running prompt is interrupted with `/interrupt`, as in ComfyUI)."""
    targets = await visible(store, caller, JobStatus.QUEUED) if body.get("clear") else []
    for job_id in _ids(body.get("delete")):
        job = await find(store, job_id, caller)
        if job is not None and job.status == JobStatus.QUEUED:
            targets.append(job)
    for job in targets:
        await store.cancel(job.id)


async def delete_history(store: JobStore, caller: Caller, body: dict[str, Any]) -> None:
    """`POST /history`: `clear` forgets every finished job of the caller, `delete` the named
    finished ones (their files stay: outputs are pruned by retention, not by the history)."""
    ids = []
    if body.get("clear"):
        ids = [job.id for job in await visible(store, caller, None) if job.terminal]
    for job_id in _ids(body.get("delete")):
        job = await find(store, job_id, caller)
        if job is not None and job.terminal:
            ids.append(job_id)
    if ids:
        await store.forget(ids)


async def cancel_jobs(store: JobStore, caller: Caller, job_ids: list[str]) -> bool:
    """The jobs API's cancel: each named job the caller may see that waits or runs is
    cancelled; whether any was."""
    cancelled = False
    for job_id in job_ids:
        job = await find(store, job_id, caller)
        if job is not None and not job.terminal:
            await store.cancel(job.id)
            cancelled = True
    return cancelled


async def interrupt(store: JobStore, caller: Caller, body: dict[str, Any]) -> None:
    """`POST /interrupt`: the named prompt, wherever it runs; without a name, every running
    prompt of the caller (ComfyUI stops the one it runs; the fleet runs several)."""
    prompt_id = body.get("prompt_id")
    if isinstance(prompt_id, str):
        job = await find(store, prompt_id, caller)
        targets = [job] if job is not None and job.status == JobStatus.RUNNING else []
    else:
        targets = await visible(store, caller, JobStatus.RUNNING)
    for job in targets:
        await store.cancel(job.id)
