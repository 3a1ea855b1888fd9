"""A fleet job in ComfyUI's own shapes: queue items, history entries, error and end messages.

ComfyUI knows a prompt by a tuple `[number, prompt_id, prompt, extra_data, outputs_to_execute]`
and keeps a finished one in its history as `{prompt, outputs, status, meta}`. Here those are
built from the stored job, so they read the same whichever instance ran it and whichever gateway
answers. What a job keeps of its ComfyUI submission (the client id, the number, `extra_data`)
travels in its options (`JobOptions.comfyui` and `JobOptions.extra_data`).
"""

from __future__ import annotations

from typing import Any

from comfyfleet.jobs import Job, JobStatus

_FAILED_STATUS = {
    JobStatus.SUCCEEDED: "success",
    JobStatus.FAILED: "error",
    JobStatus.CANCELLED: "error",
}


def client_id_of(job: Job) -> str | None:
    """The ComfyUI client id the job's prompt came with (None: submitted some other way)."""
    comfy = job.options.comfyui
    value = None if comfy is None else comfy.get("client_id")
    return value if isinstance(value, str) else None


def number_of(job: Job) -> int | float:
    """The prompt's number: the one the client sent, else the job's place in the store."""
    comfy = job.options.comfyui
    value = None if comfy is None else comfy.get("number")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return job.seq


def extra_data_of(job: Job) -> dict[str, Any]:
    extra = job.options.extra_data
    out = {} if extra is None else dict(extra)
    client_id = client_id_of(job)
    if client_id is not None:
        out["client_id"] = client_id
    return out


def output_nodes(job: Job, output_classes: frozenset[str]) -> list[str]:
    """The graph's output nodes (what ComfyUI lists as `outputs_to_execute`)."""
    return [
        node_id
        for node_id, node in job.workflow.items()
        if isinstance(node, dict) and node.get("class_type") in output_classes
    ]


def queue_item(job: Job, output_classes: frozenset[str]) -> list[Any]:
    """`[number, prompt_id, prompt, extra_data, outputs_to_execute]`."""
    return [
        number_of(job),
        job.id,
        job.workflow,
        extra_data_of(job),
        output_nodes(job, output_classes),
    ]


def node_outputs(job: Job) -> dict[str, dict[str, list[Any]]]:
    """The job's outputs grouped as ComfyUI's history has them: node id -> kind -> items."""
    grouped: dict[str, dict[str, list[Any]]] = {}
    for output in job.outputs:
        node = str(output.node_id)
        kind = output.kind or "images"
        if kind == "text":
            item: Any = output.text
        else:
            item = {
                "filename": output.filename or "",
                "subfolder": output.subfolder or "",
                "type": output.type or "",
            }
        grouped.setdefault(node, {}).setdefault(kind, []).append(item)
    return grouped


def ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def error_message(job: Job) -> dict[str, Any]:
    """`execution_error`'s data, from the job's error."""
    error = job.error or {}
    message = error.get("exception_message") or error.get("message") or "the job failed"
    return {
        "prompt_id": job.id,
        "node_id": error.get("node_id"),
        "node_type": error.get("node_type"),
        "executed": [],
        "exception_message": message,
        "exception_type": error.get("exception_type") or error.get("code") or "Error",
        "traceback": [],
        "current_inputs": {},
        "current_outputs": {},
        "timestamp": ms(job.finished_at),
    }


def end_messages(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """The messages that end a prompt, as ComfyUI sends them: the outcome, then `executing`
    with no node."""
    at = ms(job.finished_at)
    if job.status == JobStatus.SUCCEEDED:
        outcome: tuple[str, dict[str, Any]] = (
            "execution_success",
            {"prompt_id": job.id, "timestamp": at},
        )
    elif job.status == JobStatus.CANCELLED:
        node = None if job.progress is None else job.progress.node
        outcome = (
            "execution_interrupted",
            {
                "prompt_id": job.id,
                "node_id": node,
                "node_type": _class_of(job, node),
                "executed": [],
                "timestamp": at,
            },
        )
    else:
        outcome = ("execution_error", error_message(job))
    idle = {"node": None, "display_node": None, "prompt_id": job.id}
    return [outcome, ("executing", idle)]


def history_entry(job: Job, output_classes: frozenset[str]) -> dict[str, Any]:
    """The job as an entry of ComfyUI's `/history` (a finished job only)."""
    messages: list[list[Any]] = []
    if job.started_at is not None:
        messages.append(["execution_start", {"prompt_id": job.id, "timestamp": ms(job.started_at)}])
    messages.extend([name, data] for name, data in end_messages(job)[:1])
    status = {
        "status_str": _FAILED_STATUS.get(job.status, "error"),
        "completed": job.status == JobStatus.SUCCEEDED,
        "messages": messages,
    }
    outputs = node_outputs(job)
    meta = {
        node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
        for node in outputs
    }
    return {
        "prompt": queue_item(job, output_classes),
        "outputs": outputs,
        "status": status,
        "meta": meta,
    }


def _class_of(job: Job, node: Any) -> str | None:
    spec = job.workflow.get(str(node)) if node is not None else None
    value = spec.get("class_type") if isinstance(spec, dict) else None
    return value if isinstance(value, str) else None
