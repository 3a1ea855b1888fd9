"""The job plans: submit, read, list, cancel, follow the events, wait, run.

Following a job reads its Server-Sent Events; when the connection drops (or the server closes
the stream on shutdown) it reconnects with `Last-Event-ID`, so the caller gets every event
once, in order, and never a gap. Waiting follows the events to the job's end, then reads the
job and downloads its outputs; a job that failed raises :class:`JobFailed` with the node.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from comfyfleet.client._errors import (
    ComfyfleetClientError,
    ConnectionError,
    JobCancelled,
    JobFailed,
    Timeout,
)
from comfyfleet.client._outputs import Output, Result
from comfyfleet.client._protocol import (
    READ_LINE,
    Emit,
    Plan,
    Request,
    Sleep,
    TransportFailure,
)
from comfyfleet.client._records import Event, JobRecord
from comfyfleet.client._resources import download, templates_error, upload
from comfyfleet.client._retry import Retries, call, expected_error, send
from comfyfleet.client._sse import SseMessage, SseParser
from comfyfleet.client._workflow import JobOptions, Target, is_file_value, job_body, plain_value

STREAM_IDLE_S = 60.0
"""With a deadline, the longest a read of an event stream waits: the server sends a heartbeat
every 15 s, so a stream silent this long is dead and is reopened."""


def job_path(job_id: str, tail: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{tail}"


def deadline_after(timeout: float | None) -> float | None:
    """The monotonic time a wait of `timeout` seconds ends (None: never)."""
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, not {timeout}")
    return time.monotonic() + timeout


def new_idempotency_key() -> str:
    return f"comfyfleet-client-{uuid.uuid4().hex}"


def submit(
    target: Target,
    params: Mapping[str, Any] | None,
    options: JobOptions,
    retries: Retries,
    idempotency_key: str | None = None,
) -> Plan[JobRecord]:
    """Upload the file values of `params`, then submit: a retried submit carries the same
    `Idempotency-Key`, so the server answers it with the job the first try made."""
    job_body(target, dict.fromkeys(params or {}), options)  # every name checked before uploads
    values: dict[str, Any] = {}
    for name, value in (params or {}).items():
        if is_file_value(value):
            value = (yield from upload(value, None, None, retries)).ref
        values[name] = plain_value(value)
    body = job_body(target, values, options)
    key = idempotency_key or new_idempotency_key()
    request = Request(
        "POST", target.route, json=body, headers={"Idempotency-Key": key}, idempotent=True
    )
    reply = yield from send(request, retries)
    if reply.status not in (200, 202):
        error = expected_error(reply)
        raise error if target.template is None else templates_error(error, target.template)
    return JobRecord.from_dict(reply.json())


def read_job(job_id: str, retries: Retries) -> Plan[JobRecord]:
    reply = yield from call(Request("GET", job_path(job_id), idempotent=True), retries)
    return JobRecord.from_dict(reply.json())


def cancel(job_id: str, retries: Retries) -> Plan[JobRecord]:
    # Cancelling twice is cancelling once: safe to repeat.
    request = Request("POST", job_path(job_id, "/cancel"), idempotent=True)
    reply = yield from call(request, retries)
    return JobRecord.from_dict(reply.json())


def list_jobs(status: str | None, page_size: int, retries: Retries) -> Plan[None]:
    """Emits every job the key may see, newest first, reading page after page."""
    cursor: str | None = None
    while True:
        params = {"limit": str(page_size)}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        reply = yield from call(Request("GET", "/v1/jobs", params=params, idempotent=True), retries)
        page = reply.json()
        for data in page.get("jobs") or []:
            yield Emit(JobRecord.from_dict(data))
        cursor = page.get("next_cursor")
        if not cursor:
            return


def follow(
    job_id: str,
    retries: Retries,
    *,
    after: str | None = None,
    previews: bool = False,
    deadline: float | None = None,
) -> Plan[None]:
    """Emits the job's events after event id `after` (None: from the start) until its final
    status, resuming after any dropped connection."""
    last = after
    failures = 0
    while True:
        request = Request(
            "GET",
            job_path(job_id, "/events"),
            params={"previews": "true"} if previews else {},
            headers={"Last-Event-ID": last} if last else {},
            stream=True,
            timeout=_read_timeout(deadline, job_id),
            idempotent=True,
        )
        try:
            reply = yield from send(request, retries)
            if reply.status == 204:
                return  # finished, and nothing after `last`
            if reply.status != 200:
                raise expected_error(reply)
            parser = SseParser()
            while (line := (yield READ_LINE)) is not None:
                failures = 0  # a line, even a heartbeat, shows the connection is alive
                event = _event(parser.feed(line))
                if event is None:
                    continue
                last = event.id or last
                yield Emit(event)
                if event.final:
                    return
            problem = "the server ended the event stream before the job ended"
        except TransportFailure as exc:
            problem = exc.message
        except (Timeout, ConnectionError):
            _check_deadline(deadline, job_id)
            raise
        failures += 1
        _check_deadline(deadline, job_id)
        if failures >= retries.attempts:
            raise ConnectionError(f"following job {job_id}: {problem}")
        yield Sleep(retries.delay(failures))


def wait(
    job_id: str,
    retries: Retries,
    *,
    deadline: float | None,
    download_outputs: bool = True,
    known: JobRecord | None = None,
) -> Plan[Result]:
    """Emits the job's events until it ends; its result, or :class:`JobFailed` /
    :class:`JobCancelled`. `known` is the job as just read (no need to read it again)."""
    record = known if known is not None else (yield from read_job(job_id, retries))
    while not record.finished:
        yield from follow(job_id, retries, deadline=deadline)
        record = yield from read_job(job_id, retries)
    return (yield from result(record, retries, download_outputs))


def run(
    target: Target,
    params: Mapping[str, Any] | None,
    options: JobOptions,
    retries: Retries,
    *,
    deadline: float | None,
    download_outputs: bool = True,
) -> Plan[Result]:
    """Submit (one idempotency key for every try), then wait. The caller's `on_progress` was
    there before the job: it gets every event, from the first, even those of a job that ends
    before the wait begins (a read first would find it ended and follow nothing)."""
    record = yield from submit(target, params, options, retries, new_idempotency_key())
    plan = wait(
        record.id, retries, deadline=deadline, download_outputs=download_outputs, known=record
    )
    return (yield from plan)


def result(record: JobRecord, retries: Retries, download_outputs: bool) -> Plan[Result]:
    """A finished job's result, its files downloaded (and checked against their sha256)."""
    if record.status == "failed":
        raise JobFailed(record, record.error or {})
    if record.status == "cancelled":
        raise JobCancelled(record)
    if record.status != "succeeded":
        raise ComfyfleetClientError(f"job {record.id} is {record.status}, not finished")
    outputs = []
    for data in record.outputs:
        content = None
        url = data.get("url")
        if download_outputs and isinstance(url, str) and data.get("text") is None:
            content = yield from download(url, data.get("sha256"), retries)
        outputs.append(Output.from_dict(data, content))
    return Result(record, outputs)


def _event(message: SseMessage | None) -> Event | None:
    if message is None:
        return None
    try:
        payload = json.loads(message.data)
    except ValueError:
        return None  # not one of ours: nothing a job event can be read from
    if not isinstance(payload, dict):
        return None
    return Event.from_message(message.event, payload, message.id)


def _read_timeout(deadline: float | None, job_id: str) -> float | None:
    """How long a read of the stream may wait: the client's timeout, or less when the
    deadline comes first (a silent stream is reopened; the deadline raises)."""
    if deadline is None:
        return None
    _check_deadline(deadline, job_id)
    return max(0.05, min(STREAM_IDLE_S, deadline - time.monotonic()))


def _check_deadline(deadline: float | None, job_id: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise Timeout(f"job {job_id} did not end in the time given", job_id=job_id)
