"""The client's logic, driven by hand: the plans are generators of operations, so a test plays
the network (answers, dropped connections, a stream's lines) and checks what they do."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from comfyfleet.client import (
    ApiError,
    ComfyfleetClientError,
    ConnectionError,
    Event,
    JobCancelled,
    JobFailed,
    Retries,
    Timeout,
    _jobs,
    _resources,
)
from comfyfleet.client._protocol import Emit, Plan, ReadLine, Reply, Request, Sleep
from comfyfleet.client._protocol import TransportFailure as Failure
from comfyfleet.client._records import JobRecord
from comfyfleet.client._workflow import Target

RETRIES = Retries(attempts=3, initial_delay_s=0.25, max_delay_s=4)


class Played:
    """Runs a plan against scripted answers: a Reply for a request, a str (or None: the end)
    for a ReadLine, a Failure to throw in. Keeps every operation and emitted value."""

    def __init__(self, plan: Plan[Any], answers: list[Any]) -> None:
        self.ops: list[Any] = []
        self.emitted: list[Any] = []
        self.value: Any = None
        answer: Any = None
        while True:
            try:
                op = plan.throw(answer) if isinstance(answer, Failure) else plan.send(answer)
            except StopIteration as stop:
                self.value = stop.value
                return
            self.ops.append(op)
            if isinstance(op, Emit):
                self.emitted.append(op.value)
            answer = None if isinstance(op, Sleep | Emit) else answers.pop(0)

    @property
    def requests(self) -> list[Request]:
        return [op for op in self.ops if isinstance(op, Request)]

    @property
    def sleeps(self) -> list[float]:
        return [op.seconds for op in self.ops if isinstance(op, Sleep)]


def reply(status: int, body: Any = None, **headers: str) -> Reply:
    raw = b"" if body is None else json.dumps(body).encode()
    return Reply(status, {k.replace("_", "-"): v for k, v in headers.items()}, raw)


def sse(event: str, seq: int, data: dict[str, Any], event_id: str | None = None) -> list[str]:
    payload = json.dumps({"job_id": "j1", "seq": seq, "event": event, "data": data})
    return [f"id: {event_id or seq}", f"event: {event}", f"data: {payload}", ""]


def job(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "j1", "status": status, "outputs": [], "error": None, **extra}


BROKEN = Failure("RemoteProtocolError: peer closed", sent=True, timeout=False)
REFUSED = Failure("ConnectError: refused", sent=False, timeout=False)


# --- submit and retries -------------------------------------------------------------------


def test_a_submit_whose_answer_was_lost_is_resent_with_the_same_idempotency_key() -> None:
    graph = {"1": {"class_type": "EmptyImage", "inputs": {}}}
    plan = _jobs.submit(Target(None, graph), None, {"priority": 3}, RETRIES)
    played = Played(plan, [BROKEN, reply(202, job("queued"))])
    first, second = played.requests
    assert first == second  # the very same request: body and Idempotency-Key
    assert first.headers["Idempotency-Key"].startswith("comfyfleet-client-")
    assert first.json == {"workflow": graph, "priority": 3}
    assert played.value == JobRecord.from_dict(job("queued"))
    assert len(played.sleeps) == 1 and 0 <= played.sleeps[0] <= 0.25


def test_each_submit_makes_its_own_idempotency_key_and_a_given_one_is_kept() -> None:
    target = Target("txt2img", None)
    keys = [
        Played(_jobs.submit(target, {"seed": 1}, {}, RETRIES), [reply(202, job("queued"))])
        .requests[0]
        .headers["Idempotency-Key"]
        for _ in range(2)
    ]
    assert keys[0] != keys[1]
    given = _jobs.submit(target, {"seed": 1}, {}, RETRIES, "my-key")
    request = Played(given, [reply(202, job("queued"))]).requests[0]
    assert request.headers["Idempotency-Key"] == "my-key"
    assert request.url == "/v1/templates/txt2img/jobs"
    assert request.json == {"params": {"seed": 1}}


def test_a_request_that_may_not_be_repeated_is_retried_only_when_it_never_left() -> None:
    refused_then_ok = Played(
        _resources.install_preset("sd15", RETRIES), [REFUSED, reply(202, {"id": "inst"})]
    )
    assert refused_then_ok.value == "inst" and len(refused_then_ok.requests) == 2
    with pytest.raises(ConnectionError, match="POST /v1/presets/sd15/install: RemoteProtocol"):
        Played(_resources.install_preset("sd15", RETRIES), [BROKEN])


def test_a_busy_server_is_retried_after_the_time_it_asks_for() -> None:
    played = Played(
        _jobs.read_job("j1", RETRIES),
        [reply(503, {"error": {"code": "x"}}, retry_after="2"), reply(200, job("running"))],
    )
    assert played.sleeps == [2.0]
    assert played.value.status == "running"


def test_retries_end_with_the_last_answer_as_an_api_error() -> None:
    busy = reply(429, {"error": {"code": "queue_full", "message": "full"}}, retry_after="0")
    with pytest.raises(ApiError) as caught:
        Played(_jobs.read_job("j1", RETRIES), [busy, busy, busy])
    assert (caught.value.status, caught.value.code) == (429, "queue_full")


def test_a_timeout_after_every_attempt_is_a_timeout() -> None:
    slow = Failure("ReadTimeout", sent=True, timeout=True)
    with pytest.raises(Timeout, match="GET /v1/jobs/j1: no answer in time"):
        Played(_jobs.read_job("j1", RETRIES), [slow, slow, slow])


def test_retry_waits_grow_and_stay_under_the_ceiling() -> None:
    retries = Retries(attempts=10, initial_delay_s=1, max_delay_s=5)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 5), (9, 5)]:
        assert all(0 <= retries.delay(attempt) <= ceiling for _ in range(50))
    assert retries.delay(1, "30") == 5  # Retry-After is honoured up to the ceiling
    with pytest.raises(ValueError, match="at least 1"):
        Retries(attempts=0)


# --- following events -----------------------------------------------------------------------


def test_a_dropped_event_stream_resumes_after_the_last_event_it_delivered() -> None:
    opened = reply(200)
    first = [*sse("status", 1, {"status": "running"}), ": keep-alive", ""]
    first += sse("output", 4, {"filename": "a.png"}, "4:1")
    rest = sse("status", 4, {"status": "succeeded"})
    answers: list[Any] = [opened, *first, BROKEN, opened, *rest]
    played = Played(_jobs.follow("j1", RETRIES), answers)
    resumed = played.requests[1]
    assert "Last-Event-ID" not in played.requests[0].headers
    assert resumed.headers["Last-Event-ID"] == "4:1"  # mid-group: the server sends the rest
    assert [(e.type, e.id) for e in played.emitted] == [
        ("status", "1"),
        ("output", "4:1"),
        ("status", "4"),
    ]
    assert played.emitted[-1].final


def test_following_a_finished_job_with_nothing_left_ends_at_once() -> None:
    played = Played(_jobs.follow("j1", RETRIES, after="9"), [reply(204)])
    assert played.emitted == [] and played.requests[0].headers["Last-Event-ID"] == "9"


def test_a_stream_that_keeps_failing_gives_up_naming_the_job() -> None:
    answers = [reply(200), BROKEN, reply(200), BROKEN, reply(200), BROKEN]
    with pytest.raises(ConnectionError, match="following job j1: RemoteProtocolError"):
        Played(_jobs.follow("j1", RETRIES), answers)


def test_a_wait_past_its_deadline_is_a_timeout_naming_the_job() -> None:
    plan = _jobs.follow("j1", RETRIES, deadline=time.monotonic() + 0.05)
    next(plan)
    plan.send(reply(200))  # the stream opened; it now waits for a line
    time.sleep(0.06)
    with pytest.raises(Timeout) as caught:
        plan.throw(Failure("ReadTimeout", sent=True, timeout=True))
    assert caught.value.job_id == "j1"
    assert isinstance(caught.value, TimeoutError)


def test_the_stream_request_times_its_reads_to_the_deadline() -> None:
    plan = _jobs.follow("j1", RETRIES, deadline=time.monotonic() + 30)
    request = next(plan)
    assert isinstance(request, Request) and request.stream
    assert request.timeout is not None and 29 < request.timeout <= 30
    assert isinstance(plan.send(reply(200)), ReadLine)


# --- results --------------------------------------------------------------------------------


def test_a_failed_job_raises_job_failed_with_its_node_class_and_traceback() -> None:
    error = {
        "code": "node_error",
        "message": "node 4 (FleetFail): RuntimeError: boom",
        "node_id": "4",
        "node_type": "FleetFail",
        "exception_type": "RuntimeError",
        "traceback": ["  File x, line 1\n", "RuntimeError: boom\n"],
    }
    with pytest.raises(JobFailed) as caught:
        Played(_jobs.wait("j1", RETRIES, deadline=None), [reply(200, job("failed", error=error))])
    failure = caught.value
    assert (failure.node_id, failure.class_type, failure.exception_type) == (
        "4",
        "FleetFail",
        "RuntimeError",
    )
    assert failure.code == "node_error" and failure.traceback[-1] == "RuntimeError: boom\n"
    assert failure.job.status == "failed" and failure.job_id == "j1"
    assert str(failure) == "job j1 failed: node_error: node 4 (FleetFail): RuntimeError: boom"


def test_a_cancelled_job_raises_job_cancelled() -> None:
    with pytest.raises(JobCancelled, match="job j1 was cancelled"):
        Played(_jobs.wait("j1", RETRIES, deadline=None), [reply(200, job("cancelled"))])


def test_waiting_follows_the_events_then_downloads_and_checks_each_file() -> None:
    import hashlib

    png = b"\x89PNG fake"
    output = {
        "node_id": "3",
        "kind": "images",
        "filename": "a.png",
        "path": "a.png",
        "url": "/v1/outputs/j1/a.png",
        "content_type": "image/png",
        "size": len(png),
        "sha256": hashlib.sha256(png).hexdigest(),
    }
    text = {"node_id": "4", "kind": "text", "text": "slept 1s"}
    done = job("succeeded", outputs=[output, text])
    answers = [
        reply(200, job("running")),
        reply(200),
        *sse("status", 7, {"status": "succeeded"}),
        reply(200, done),
        Reply(200, {}, png),
    ]
    events: list[Event] = []
    played = Played(_jobs.wait("j1", RETRIES, deadline=None), answers)
    events.extend(played.emitted)
    result = played.value
    assert [e.type for e in events] == ["status"]
    assert result.files[0].bytes() == png and result.files[0].node == "3"
    assert result.texts == ["slept 1s"]
    bad = [reply(200, done), Reply(200, {}, png + b"cut")]
    with pytest.raises(ComfyfleetClientError, match="does not match its sha256"):
        Played(_jobs.wait("j1", RETRIES, deadline=None), bad)


def test_run_follows_its_job_from_the_first_event_even_when_it_ends_at_once() -> None:
    """The job ends before the wait begins: a read first would find it over and emit nothing,
    and the caller's `on_progress` would never hear of the job it asked to run."""
    graph = {"1": {"class_type": "X", "inputs": {}}}
    answers = [
        reply(202, job("queued")),
        reply(200),  # the events, from the first: the job had already ended
        *sse("status", 1, {"status": "queued"}),
        *sse("executed", 2, {"node": "1"}),
        *sse("status", 3, {"status": "succeeded"}),
        reply(200, job("succeeded")),
    ]
    played = Played(_jobs.run(Target(None, graph), None, {}, RETRIES, deadline=None), answers)
    assert [e.type for e in played.emitted] == ["status", "executed", "status"]
    assert [r.url for r in played.requests] == ["/v1/jobs", "/v1/jobs/j1/events", "/v1/jobs/j1"]
    assert "Last-Event-ID" not in played.requests[1].headers
    assert played.value.texts == []


def test_listing_jobs_reads_every_page() -> None:
    pages = [
        reply(200, {"jobs": [job("queued"), {**job("failed"), "id": "j0"}], "next_cursor": "c1"}),
        reply(200, {"jobs": [{**job("succeeded"), "id": "old"}], "next_cursor": None}),
    ]
    played = Played(_jobs.list_jobs("queued", 2, RETRIES), pages)
    assert [j.id for j in played.emitted] == ["j1", "j0", "old"]
    assert played.requests[1].params == {"limit": "2", "status": "queued", "cursor": "c1"}


# --- templates (the agreed HTTP interface) ---------------------------------------------------

TEMPLATE = {
    "name": "txt2img-sd15",
    "description": "Text to image with Stable Diffusion 1.5",
    "parameters": {
        "type": "object",
        "properties": {"prompt": {"type": "string"}, "image": {"type": "string"}},
        "required": ["image"],
    },
    "models": {"checkpoints": ["v1-5-pruned-emaonly.safetensors"]},
    "models_present": False,
    "openai": True,
}


def test_templates_are_read_from_the_listing_and_one_by_name() -> None:
    listing = reply(200, {"templates": [TEMPLATE], "broken": [{"file": "x.yaml", "error": "e"}]})
    [template] = Played(_resources.templates(RETRIES), [listing]).value
    assert (template.name, template.required, template.models_present) == (
        "txt2img-sd15",
        ["image"],
        False,
    )
    assert template.raw["openai"] is True
    missing = ["checkpoints/v1-5-pruned-emaonly.safetensors"]
    one = Played(
        _resources.template("txt2img-sd15", RETRIES),
        [reply(200, TEMPLATE | {"missing_models": missing})],
    )
    assert one.requests[0].url == "/v1/templates/txt2img-sd15"
    assert one.value.missing_models == missing


def test_a_server_without_templates_says_so_when_run_by_name() -> None:
    plan = _jobs.submit(Target("txt2img", None), {}, {}, RETRIES)
    with pytest.raises(ApiError) as caught:
        Played(plan, [Reply(405, {}, b"405: Method Not Allowed")])
    assert caught.value.code == "templates_unavailable"
    assert "'txt2img' cannot be run by name" in caught.value.message
    not_found = reply(404, {"error": {"code": "not_found", "message": "Not Found"}})
    with pytest.raises(ApiError, match="no templates API, so templates cannot be listed"):
        Played(_resources.templates(RETRIES), [not_found])
    unknown = {"error": {"code": "template_not_found", "message": "no template", "details": {}}}
    with pytest.raises(ApiError) as caught:
        Played(_jobs.submit(Target("txt2img", None), {}, {}, RETRIES), [reply(404, unknown)])
    assert caught.value.code == "template_not_found"


def test_params_and_options_are_checked_before_any_file_is_uploaded() -> None:
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    plan = _jobs.submit(Target(None, graph), {"1.image": b"png", "7.seed": 1}, {}, RETRIES)
    with pytest.raises(ComfyfleetClientError, match="no node '7'"):
        Played(plan, [])  # no answer needed: nothing was sent
    upload_first = _jobs.submit(Target(None, graph), {"1.image": b"png"}, {}, RETRIES)
    asset = {"id": "ab" * 32, "name": "comfyfleet-assets/x.png", "content_type": "image/png"}
    played = Played(upload_first, [reply(201, asset), reply(202, job("queued"))])
    upload, submit = played.requests
    assert (upload.url, upload.content, upload.headers["Content-Type"]) == (
        "/v1/assets",
        b"png",
        "application/octet-stream",
    )
    assert submit.json["workflow"]["1"]["inputs"]["image"] == f"asset:{'ab' * 32}"
