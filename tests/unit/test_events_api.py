"""`GET /v1/jobs/{id}/events` (SSE) and `WS /v1/ws` served by a real uvicorn on 127.0.0.1, with a
real in-memory job store driven through a job's life the way the dispatcher drives it."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, MutableMapping
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from comfyfleet.gateway._errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
)
from comfyfleet.gateway._events_api import events_router
from comfyfleet.gateway._previews import PreviewHub
from comfyfleet.gateway._sse import EventStreamResponse
from comfyfleet.gateway._views import job_view
from comfyfleet.jobs import JobOutput, MemoryJobStore, NewJob

T = TypeVar("T")
WORKER = "agent-1"
GRAPH = {"1": {"class_type": "SaveImage", "inputs": {}}}
LONG = 3600.0  # a heartbeat or poll interval no test waits for


class Served:
    """The events router alone in a FastAPI app, served by uvicorn in a thread that owns the
    event loop; the test drives the store on that loop with `call`."""

    def __init__(self, *, heartbeat_s: float = LONG, poll_s: float = LONG) -> None:
        self.store = MemoryJobStore()
        self.hub = PreviewHub()
        self.closing = asyncio.Event()
        app = FastAPI()
        app.add_exception_handler(ApiError, api_error_handler)
        app.add_exception_handler(StarletteHTTPException, http_error_handler)
        app.add_exception_handler(RequestValidationError, validation_error_handler)
        router = events_router(
            self.store,
            job_view,
            self.hub,
            heartbeat_s=heartbeat_s,
            poll_s=poll_s,
            closing=self.closing,
        )
        app.include_router(router)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.url, self.ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/ws"
        config = uvicorn.Config(
            app, log_config=None, lifespan="off", access_log=False, timeout_graceful_shutdown=10
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve(sockets=[self.sock])

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        self.http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def tasks(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        return self.call(count())

    def until(self, check: Callable[[], bool], what: str) -> None:
        """Wait for something the server does on its own (not a speed check: the limit is
        only there so that a bug fails the test instead of hanging it)."""
        deadline = time.monotonic() + 20
        while not check():
            assert time.monotonic() < deadline, f"never happened: {what}"
            time.sleep(0.01)

    def preview(self, job_id: str, data: bytes) -> int:
        async def publish() -> int:
            return self.hub.publish(job_id, "png", data)

        return self.call(publish())


def outputs_of(job_id: str) -> list[JobOutput]:
    return [
        JobOutput(
            node_id="9",
            kind="images",
            filename="cat_00001_.png",
            subfolder=job_id,
            type="output",
            path="cat_00001_.png",
            url=f"/v1/outputs/{job_id}/cat_00001_.png",
        ),
        JobOutput(node_id="12", kind="text", text="a cat"),
    ]


async def start(store: MemoryJobStore, job_id: str) -> None:
    await store.enqueue(NewJob(id=job_id, workflow=GRAPH))
    await store.claim(WORKER, lease_s=60, instance=0)
    await store.publish(job_id, "started", {"instance": 0, "comfy_ts": 1})


async def work(store: MemoryJobStore, job_id: str) -> None:
    await store.publish(job_id, "executing", {"node": "3"})
    await store.publish(job_id, "progress", {"node": "3", "value": 10, "max": 20})
    await store.publish(job_id, "executed", {"node": "9", "output": {}})


async def succeed(store: MemoryJobStore, job_id: str) -> None:
    await store.complete(job_id, WORKER, outputs_of(job_id), details={"instance": 0})


async def whole_life(store: MemoryJobStore, job_id: str) -> None:
    await start(store, job_id)
    await work(store, job_id)
    await succeed(store, job_id)


# --- reading SSE ------------------------------------------------------------------------------


def sse_items(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Messages as {"id"?, "event", "data"} and comments as {"comment": text}, in order."""
    message: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line == "":
            if message:
                yield message
            message = {}
        else:
            field, _, value = line.partition(": ")
            message[field] = json.loads(value) if field == "data" else value


def messages(items: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in items if "comment" not in item]


def next_message(items: Iterator[dict[str, Any]]) -> dict[str, Any]:
    return next(item for item in items if "comment" not in item)


def stream_all(served: Served, path: str, **headers: str) -> list[dict[str, Any]]:
    with served.http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, response.read()
        return messages(sse_items(response))


def names(found: list[dict[str, Any]]) -> list[str]:
    return [m["event"] for m in found]


# --- SSE --------------------------------------------------------------------------------------


def test_sse_follows_a_job_live_with_ids_heartbeats_and_an_end() -> None:
    with Served(heartbeat_s=0.05) as served:
        served.call(served.store.enqueue(NewJob(id="j1", workflow=GRAPH)))
        with served.http.stream("GET", "/v1/jobs/j1/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            items = sse_items(response)
            queued = next(items)
            assert queued["event"] == "status" and queued["data"]["data"] == {"status": "queued"}
            assert queued["id"] == str(queued["data"]["seq"]) and queued["data"]["job_id"] == "j1"
            assert next(items) == {"comment": "keep-alive"}  # idle: a heartbeat comes
            served.call(whole_life(served.store, "j1"))
            rest = list(items)  # ends by itself after the final status
    found = messages(iter(rest))
    assert names(found) == [
        "status", "started", "executing", "progress", "executed", "output", "output", "status",
    ]  # fmt: skip
    running, started, executing, progress, executed, image, text, final = found
    assert running["data"]["data"] == {"status": "running", "attempt": 1, "instance": 0}
    assert progress["data"]["data"] == {"node": "3", "step": 10, "steps": 20, "value": 0.5}
    assert image["data"]["data"]["url"] == "/v1/outputs/j1/cat_00001_.png"
    assert text["data"]["data"]["text"] == "a cat"
    assert final["data"]["data"] == {"status": "succeeded", "attempt": 1, "instance": 0}
    # Every message has an id of its own: its store event's seq, and for the outputs grouped
    # with the final status (they share its seq) `seq:part`, so a client that resumes from
    # any of them misses nothing and gets nothing twice.
    singles = [queued, running, started, executing, progress, executed, final]
    ids = [int(m["id"]) for m in singles]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(int(m["id"]) == m["data"]["seq"] for m in singles)
    assert image["data"]["seq"] == text["data"]["seq"] == final["data"]["seq"]
    seq = final["data"]["seq"]
    assert (image["id"], text["id"]) == (f"{seq}:1", f"{seq}:2")
    assert all(item == {"comment": "keep-alive"} for item in rest if "comment" in item)


def test_sse_resumes_with_last_event_id_or_after_and_replays_exactly_what_is_missing() -> None:
    with Served() as served:
        served.call(whole_life(served.store, "j1"))
        everything = stream_all(served, "/v1/jobs/j1/events")
        assert names(everything)[-3:] == ["output", "output", "status"]
        assert all("id" in m for m in everything)
        for cut in range(len(everything)):
            missing = everything[cut + 1 :]
            if not missing:
                break
            resumed = stream_all(
                served, "/v1/jobs/j1/events", **{"Last-Event-ID": everything[cut]["id"]}
            )
            assert resumed == missing, f"resumed after {everything[cut]['event']}"
        executed = next(m for m in everything if m["event"] == "executed")
        by_query = stream_all(served, f"/v1/jobs/j1/events?after={executed['id']}")
        assert names(by_query) == ["output", "output", "status"]
        # The header (a browser resuming) wins over the query of the original URL.
        header_wins = stream_all(
            served, "/v1/jobs/j1/events?after=0", **{"Last-Event-ID": executed["id"]}
        )
        assert header_wins == by_query

        # Resumed after its end, a finished job says 204: EventSource stops reconnecting.
        done = served.http.get(
            "/v1/jobs/j1/events", headers={"Last-Event-ID": everything[-1]["id"]}
        )
        assert done.status_code == 204 and done.content == b""

        missing_job = served.http.get("/v1/jobs/nope/events")
        assert missing_job.status_code == 404
        assert missing_job.json()["error"]["code"] == "job_not_found"
        assert "nope" in missing_job.json()["error"]["message"]
        for bad in ("abc", "5:", ":1", "5:x", "5:0", "1:2:3"):
            bad_id = served.http.get("/v1/jobs/j1/events", headers={"Last-Event-ID": bad})
            assert bad_id.status_code == 400, bad
            assert bad_id.json()["error"]["code"] == "invalid_event_id"
        bad_after = served.http.get("/v1/jobs/j1/events?after=-1")
        assert bad_after.status_code == 422
        assert bad_after.json()["error"]["code"] == "invalid_request"


def test_the_stream_is_documented_in_the_openapi_schema() -> None:
    with Served() as served:
        schema = served.http.get("/openapi.json")
        assert schema.status_code == 200
        operation = schema.json()["paths"]["/v1/jobs/{job_id}/events"]["get"]
        assert "text/event-stream" in operation["responses"]["200"]["content"]
        assert {"204", "404"} <= set(operation["responses"])
        parameters = {p["name"] for p in operation["parameters"]}
        assert {"job_id", "after", "previews", "last-event-id"} <= parameters


def test_a_stream_cut_mid_job_resumes_without_loss_and_leaves_nothing_running() -> None:
    with Served() as served:
        served.call(start(served.store, "j1"))
        idle_tasks = served.tasks()
        with served.http.stream("GET", "/v1/jobs/j1/events?previews=true") as response:
            items = sse_items(response)
            seen = [next_message(items) for _ in range(3)]  # queued, running, started
            served.until(lambda: served.hub.subscriber_count("j1") == 1, "preview subscription")
        # The client left: with heartbeats and polls an hour apart, only the disconnect itself
        # can end the stream, its store wait and its preview subscription.
        served.until(lambda: served.hub.subscriber_count() == 0, "preview subscription ended")
        served.until(lambda: served.tasks() == idle_tasks, "stream tasks ended")

        served.call(work(served.store, "j1"))
        served.call(succeed(served.store, "j1"))
        resumed = stream_all(served, "/v1/jobs/j1/events", **{"Last-Event-ID": seen[-1]["id"]})
        assert seen + resumed == stream_all(served, "/v1/jobs/j1/events")
        assert names(resumed) == ["executing", "progress", "executed", "output", "output", "status"]


def test_sse_previews_come_while_the_job_runs_without_ids() -> None:
    with Served() as served:
        served.call(start(served.store, "j1"))
        frame = b"\x89PNG\r\n\x1a\nlatent"
        with served.http.stream("GET", "/v1/jobs/j1/events?previews=true") as response:
            items = sse_items(response)
            assert names([next_message(items) for _ in range(3)]) == ["status", "status", "started"]
            served.until(lambda: served.hub.subscriber_count("j1") == 1, "preview subscription")
            assert served.preview("j1", frame) == 1
            preview = next_message(items)
            assert preview["event"] == "preview" and "id" not in preview
            assert preview["data"]["seq"] is None and preview["data"]["job_id"] == "j1"
            assert preview["data"]["data"]["format"] == "png"
            assert base64.b64decode(preview["data"]["data"]["base64"]) == frame
            served.call(succeed(served.store, "j1"))
            assert names(messages(items)) == ["output", "output", "status"]
        without = stream_all(served, "/v1/jobs/j1/events")
        assert "preview" not in names(without)  # previews are live only, never replayed


def test_sse_shows_a_retry_then_the_error_and_the_failure() -> None:
    error = {"code": "node_error", "message": "node 6 (KSampler): boom", "retryable": False}

    async def retried_then_failed(store: MemoryJobStore) -> None:
        await store.enqueue(NewJob(id="j1", workflow=GRAPH, max_attempts=2))
        await store.claim(WORKER, lease_s=60)
        lost = {"code": "instance_lost", "message": "instance 0: it died"}
        await store.fail("j1", WORKER, lost, retryable=True)
        await store.claim(WORKER, lease_s=60)
        await store.fail("j1", WORKER, error, retryable=False)

    with Served() as served:
        served.call(retried_then_failed(served.store))
        found = stream_all(served, "/v1/jobs/j1/events")
    statuses = [m["data"]["data"].get("status") for m in found]
    assert statuses == ["queued", "running", "queued", "running", None, "failed"]
    assert found[2]["data"]["data"]["retry"] is True
    assert found[3]["data"]["data"]["attempt"] == 2
    assert found[4]["event"] == "error" and found[4]["data"]["data"] == error
    assert found[5]["id"] == str(found[4]["data"]["seq"])
    assert found[4]["id"] == f"{found[5]['id']}:1"
    assert found[5]["data"]["data"] == {"status": "failed", "attempt": 2, "error": error}


# --- WebSocket --------------------------------------------------------------------------------


def receive(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=30))
    assert isinstance(message, dict)
    return message


def subscribe(ws: ClientConnection, job_id: str, **options: Any) -> list[dict[str, Any]]:
    """Subscribe; returns what other subscriptions sent before the acknowledgement."""
    ws.send(json.dumps({"op": "subscribe", "job_id": job_id, **options}))
    before = []
    while (ack := receive(ws))["job_id"] != job_id:
        before.append(ack)
    assert ack["event"] == "subscribed" and ack["data"] == {
        "after": options.get("after", 0),
        "previews": options.get("previews", False),
    }, ack
    return before


def test_one_socket_follows_two_jobs_live_until_both_end() -> None:
    with Served() as served:
        served.call(served.store.enqueue(NewJob(id="a", workflow=GRAPH)))
        served.call(served.store.enqueue(NewJob(id="b", workflow=GRAPH)))
        with connect(served.ws_url) as ws:
            got: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
            subscribe(ws, "a")
            got["a"].extend(subscribe(ws, "b", after=0))

            async def both(store: MemoryJobStore) -> None:
                await store.claim(WORKER, lease_s=60)  # a
                await store.claim(WORKER, lease_s=60)  # b
                await work(store, "b")
                await work(store, "a")
                await succeed(store, "b")
                await store.fail(
                    "a", WORKER, {"code": "node_error", "message": "x"}, retryable=False
                )

            served.call(both(served.store))
            while not all(
                m and m[-1]["data"].get("status") in ("succeeded", "failed") for m in got.values()
            ):
                message = receive(ws)
                got[message["job_id"]].append(message)
    assert [m["event"] for m in got["a"]] == [
        "status", "status", "executing", "progress", "executed", "error", "status",
    ]  # fmt: skip
    assert [m["event"] for m in got["b"]] == [
        "status", "status", "executing", "progress", "executed", "output", "output", "status",
    ]  # fmt: skip
    for job_messages in got.values():
        seqs = [m["seq"] for m in job_messages]
        assert seqs == sorted(seqs)
        assert set(job_messages[0]) == {"job_id", "seq", "event", "data"}
    assert got["b"][-3]["data"]["url"] == "/v1/outputs/b/cat_00001_.png"


def test_a_subscription_replays_after_a_seq_exactly_like_sse() -> None:
    with Served() as served:
        served.call(whole_life(served.store, "j1"))
        sse = stream_all(served, "/v1/jobs/j1/events")
        running = sse[1]
        assert running["data"]["data"]["status"] == "running"
        with connect(served.ws_url) as ws:
            subscribe(ws, "j1", after=int(running["id"]))
            replayed = [receive(ws)]
            while replayed[-1]["event"] != "status":
                replayed.append(receive(ws))
            ws.send(json.dumps({"op": "ping"}))
            assert receive(ws)["event"] == "pong"  # nothing after the final status
    assert replayed == [m["data"] for m in sse[2:]]


def test_bad_commands_get_an_error_and_the_socket_stays_open() -> None:
    with Served() as served:
        served.call(served.store.enqueue(NewJob(id="j1", workflow=GRAPH)))
        tries: list[tuple[str | bytes, str, str | None]] = [
            ("not json", "invalid_json", None),
            (b"\x00binary", "invalid_command", None),
            ("[1, 2]", "invalid_command", None),
            ('{"op": "dance"}', "unknown_op", None),
            ('{"op": "subscribe"}', "invalid_command", None),
            ('{"op": "subscribe", "job_id": "nope"}', "job_not_found", "nope"),
            ('{"op": "subscribe", "job_id": "j1", "after": -1}', "invalid_command", "j1"),
            ('{"op": "subscribe", "job_id": "j1", "previews": "yes"}', "invalid_command", "j1"),
        ]
        with connect(served.ws_url) as ws:
            for command, code, job_id in tries:
                ws.send(command)
                error = receive(ws)
                assert error["event"] == "error" and error["seq"] is None, command
                assert error["data"]["code"] == code, command
                assert error["data"]["message"] and error["job_id"] == job_id, command
            subscribe(ws, "j1")
            assert receive(ws)["data"] == {"status": "queued"}


def test_unsubscribe_and_closing_the_socket_end_every_follow() -> None:
    with Served() as served:
        served.call(start(served.store, "j1"))
        idle_tasks = served.tasks()
        with connect(served.ws_url) as ws:
            subscribe(ws, "j1", previews=True)
            assert [receive(ws)["event"] for _ in range(3)] == ["status", "status", "started"]
            served.until(lambda: served.hub.subscriber_count("j1") == 1, "preview subscription")
            assert served.preview("j1", b"frame") == 1
            assert receive(ws)["event"] == "preview"
            ws.send(json.dumps({"op": "unsubscribe", "job_id": "j1"}))
            assert receive(ws) == {"job_id": "j1", "seq": None, "event": "unsubscribed", "data": {}}
            assert served.hub.subscriber_count() == 0
            served.call(work(served.store, "j1"))
            ws.send(json.dumps({"op": "ping"}))
            assert receive(ws)["event"] == "pong"  # no event of j1 came in between

            subscribe(ws, "j1", previews=True)
            served.until(lambda: served.hub.subscriber_count("j1") == 1, "preview subscription")
        served.until(lambda: served.hub.subscriber_count() == 0, "preview subscription ended")
        served.until(lambda: served.tasks() == idle_tasks, "socket tasks ended")


def test_the_server_pings_and_closing_ends_streams_and_sockets() -> None:
    with Served(heartbeat_s=0.05) as served:
        served.call(served.store.enqueue(NewJob(id="j1", workflow=GRAPH)))
        with connect(served.ws_url) as ws:
            assert receive(ws)["event"] == "ping"
            with served.http.stream("GET", "/v1/jobs/j1/events") as response:
                items = sse_items(response)
                assert next_message(items)["data"]["data"] == {"status": "queued"}
                assert served.loop is not None
                served.loop.call_soon_threadsafe(served.closing.set)
                assert messages(items) == []  # the stream ends; the client resumes elsewhere
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    assert receive(ws)["event"] == "ping"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


def test_an_event_stream_ends_when_the_client_leaves_even_if_nothing_is_written() -> None:
    """On servers of ASGI spec 2.4, which no longer tell a streaming response to stop, a
    disconnect must still end an idle stream, and close its generator in the stream's task."""

    async def scenario() -> None:
        closed, gone = asyncio.Event(), asyncio.Event()
        sent: list[MutableMapping[str, Any]] = []

        async def idle_job() -> AsyncGenerator[bytes, None]:
            try:
                yield b"event: status\ndata: {}\n\n"
                await asyncio.Event().wait()  # nothing happens to the job, for ever
                yield b"never sent"
            finally:
                closed.set()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)
            if message.get("body"):
                gone.set()  # the client reads the first message, then goes away

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
        async with asyncio.timeout(30):  # a bug fails the test rather than hanging it
            await EventStreamResponse(idle_job())(scope, receive, send)
        assert closed.is_set()
        assert sent[0]["status"] == 200
        assert dict(sent[0]["headers"])[b"x-accel-buffering"] == b"no"
        assert [m.get("body") for m in sent[1:]] == [b"event: status\ndata: {}\n\n"]
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())
