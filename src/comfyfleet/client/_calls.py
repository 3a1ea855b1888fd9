"""The public calls' arguments, turned into plans: one place for both surfaces.

`Client.run(...)` and `AsyncClient.run(...)` take the same keyword arguments (the TypedDicts
below), hand them here, and only drive the plan that comes back, blocking or awaiting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypedDict, cast

from comfyfleet.client import _jobs
from comfyfleet.client._outputs import Result
from comfyfleet.client._protocol import Plan
from comfyfleet.client._records import Event, JobRecord
from comfyfleet.client._retry import Retries
from comfyfleet.client._workflow import JobOptions, WorkflowInput, resolve

OnEvent = Callable[[Event], object]
"""Called with each live event of a job; in the async client it may return an awaitable."""
Params = Mapping[str, Any] | None
"""A template's parameters, or `{"<node id>.<input>": value}` for a graph."""


class WaitOptions(TypedDict, total=False):
    """How to wait for a job's end."""

    on_progress: OnEvent | None
    """Called with every live event (status, executing, progress, output, ...)."""
    timeout: float | None
    """Seconds to wait at most (None: for ever); then :class:`Timeout`, the job goes on."""
    download: bool
    """Download the output files (default True); False leaves `Output.url` to fetch later."""


class RunOptions(JobOptions, WaitOptions, total=False):
    """`run()`'s keyword arguments: the job's options, and how to wait for it."""


class SubmitOptions(JobOptions, total=False):
    """`submit()`'s keyword arguments: the job's options, and its idempotency key."""

    idempotency_key: str | None
    """Names the job: sending it again answers with the same job (one is made when None)."""


_WAIT_KEYS = frozenset(WaitOptions.__annotations__)


def run(
    workflow: WorkflowInput, params: Params, options: RunOptions, retries: Retries
) -> tuple[Plan[Result], OnEvent | None]:
    job_options = cast(JobOptions, {k: v for k, v in options.items() if k not in _WAIT_KEYS})
    plan = _jobs.run(
        resolve(workflow),
        params,
        job_options,
        retries,
        deadline=_jobs.deadline_after(options.get("timeout")),
        download_outputs=options.get("download", True),
    )
    return plan, options.get("on_progress")


def submit(
    workflow: WorkflowInput, params: Params, options: SubmitOptions, retries: Retries
) -> Plan[JobRecord]:
    key = options.get("idempotency_key")
    job_options = cast(JobOptions, {k: v for k, v in options.items() if k != "idempotency_key"})
    return _jobs.submit(resolve(workflow), params, job_options, retries, key)


def wait(
    job_id: str, options: WaitOptions, retries: Retries
) -> tuple[Plan[Result], OnEvent | None]:
    unknown = sorted(set(options) - _WAIT_KEYS)
    if unknown:
        raise TypeError(f"wait() got unknown arguments: {', '.join(unknown)}")
    plan = _jobs.wait(
        job_id,
        retries,
        deadline=_jobs.deadline_after(options.get("timeout")),
        download_outputs=options.get("download", True),
    )
    return plan, options.get("on_progress")
