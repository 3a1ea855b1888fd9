"""Webhooks end to end: a real SQLite job store and outbox, a real HTTP receiver on 127.0.0.1 that
checks every signature with `verify`. The receiver is down at first, then up; the service is
stopped and everything reopened from the file half-way. Every wanted event arrives exactly once,
in order per job."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from comfyfleet.gateway._views import job_view
from comfyfleet.jobs import JobOptions, NewJob, SqliteJobStore
from comfyfleet.webhooks import (
    SqliteOutbox,
    WebhookService,
    WebhookSettings,
    WebhookVerificationError,
    generate_secret,
    verify,
)

SECRET = generate_secret()
TERMINAL = {"succeeded", "failed", "cancelled"}


# --- the receiver -------------------------------------------------------------------------------


@dataclass
class Inbox:
    """What the receiver accepted (answered 2xx), in arrival order, and what it refused."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    forged: list[str] = field(default_factory=list)
    closed_jobs: set[str] = field(default_factory=set)  # answered 503 for now
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


def make_handler(inbox: Inbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            job = self.path.rsplit("/", 1)[-1]
            try:
                verify(SECRET, dict(self.headers.items()), body)
            except WebhookVerificationError as exc:
                with inbox.lock:
                    inbox.forged.append(str(exc))
                self._answer(400)
                return
            with inbox.lock:
                if job in inbox.closed_jobs:
                    self._answer(503)
                    return
                payload = json.loads(body)
                inbox.accepted.append(
                    {
                        "id": self.headers["webhook-id"],
                        "job": job,
                        "type": payload["type"],
                        "seq": payload["data"]["event"]["seq"],
                        "status": payload["data"]["status"],
                    }
                )
            self._answer(200)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def receiver(port: int, inbox: Inbox) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(inbox))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the job side -------------------------------------------------------------------------------


async def run_jobs(
    store: SqliteJobStore, outcomes: dict[str, str], hooks: dict[str, dict[str, Any]]
) -> None:
    """Submit, claim and finish jobs as the dispatcher would (with two progress events each)."""
    for job_id in outcomes:
        options = {"webhook": hooks[job_id]} if job_id in hooks else {}
        workflow = {"1": {"class_type": "X", "inputs": {}}}
        new = NewJob(id=job_id, workflow=workflow, options=JobOptions.from_json(options))
        await store.enqueue(new)
    while (job := await store.claim("worker", lease_s=60)) is not None:
        for step in (1, 2):
            await store.publish(job.id, "progress", {"value": step, "max": 2})
        if outcomes[job.id] == "succeeded":
            await store.complete(job.id, "worker", [])
        else:
            await store.fail(job.id, "worker", {"code": "node_error"}, retryable=False)


def expected(db: Path, hooks: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """Per job, the event seqs its webhook asked for, read straight from the job store file."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT seq, job_id, kind, data FROM job_events ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    wanted: dict[str, list[int]] = {}
    for seq, job, kind, data in rows:
        if job not in hooks:
            continue
        every = hooks[job]["events"] == ["*"]
        if every or (kind == "status" and json.loads(data)["status"] in TERMINAL):
            wanted.setdefault(job, []).append(seq)
    return wanted


async def until(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 60) -> None:
    """Wait for `check()`; the limit only keeps a broken build from hanging."""
    try:
        async with asyncio.timeout(limit_s):
            while not await check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"gave up waiting: {what}") from None


# --- the test -----------------------------------------------------------------------------------


def test_every_event_arrives_once_in_order_through_downtime_and_a_restart(tmp_path: Path) -> None:
    db, port, inbox = tmp_path / "jobs.db", closed_port(), Inbox()
    url = f"http://127.0.0.1:{port}/hook"
    hooks = {
        "all-a": {"url": f"{url}/all-a", "events": ["*"]},
        "all-b": {"url": f"{url}/all-b", "events": ["*"]},
        "ends": {"url": f"{url}/ends", "events": None},
        "fails": {"url": f"{url}/fails", "events": None},
        "gated": {"url": f"{url}/gated", "events": ["*"]},
        "later": {"url": f"{url}/later", "events": ["*"]},
    }
    first_run = {"all-a": "succeeded", "all-b": "succeeded", "ends": "succeeded"}
    first_run |= {"fails": "failed", "gated": "succeeded", "silent": "succeeded"}
    settings = WebhookSettings.model_validate(
        {
            "secret": SECRET,
            "initial_backoff_s": 0.05,
            "max_backoff_s": 0.2,
            "retry_for_s": 300,
            "timeout_s": 5,
            "poll_s": 0.2,
            "concurrency": 3,
            "allow_private_targets": True,
        }
    )

    async def received(count: int) -> bool:
        return inbox.count() >= count

    async def first_process() -> None:
        store = SqliteJobStore.open(db)
        outbox = SqliteOutbox.open(db)
        service = WebhookService(store, outbox, settings, view=job_view)
        service.start()
        try:
            await run_jobs(store, first_run, hooks)
            service.notify()

            async def all_refused_once() -> bool:
                rows, _ = await outbox.list_deliveries(limit=1000)
                heads = {r.job_id: r for r in sorted(rows, key=lambda r: -r.seq)}
                return len(heads) == 5 and all(r.attempts >= 2 for r in heads.values())

            await until(all_refused_once, "the first attempts against a closed port")
            rows, _ = await outbox.list_deliveries(limit=1000)
            assert {r.state for r in rows} == {"pending"}
            assert any("cannot connect to 127.0.0.1" in (r.last_error or "") for r in rows)

            inbox.closed_jobs.add("gated")
            with receiver(port, inbox):
                wanted = expected(db, hooks)
                open_count = sum(len(v) for job, v in wanted.items() if job != "gated")
                await until(lambda: received(open_count), "delivery once the receiver is up")

                async def gated_refused() -> bool:  # its retry may come after the others land
                    rows, _ = await outbox.list_deliveries(limit=1000)
                    return any(r.job_id == "gated" and r.last_status == 503 for r in rows)

                await until(gated_refused, "the gated job answered 503 while the receiver is up")
                # Stop half-way: the gated job's deliveries are all still pending.
                await service.stop()
            rows, _ = await outbox.list_deliveries(limit=1000)
            gated = [r for r in rows if r.job_id == "gated"]
            assert gated and {r.state for r in gated} == {"pending"}
            assert any(r.last_status == 503 for r in gated)
            assert {r.state for r in rows if r.job_id != "gated"} == {"delivered"}
        finally:
            await service.stop()
            await outbox.close()
            await store.close()

    async def second_process() -> None:
        store = SqliteJobStore.open(db)
        outbox = SqliteOutbox.open(db)
        service = WebhookService(store, outbox, settings, view=job_view)
        try:
            inbox.closed_jobs.clear()
            with receiver(port, inbox):
                service.start()
                await run_jobs(store, {"later": "succeeded"}, hooks)
                service.notify()
                total = sum(len(v) for v in expected(db, hooks).values())
                await until(lambda: received(total), "the rest after the restart")
                await service.stop()
            rows, _ = await outbox.list_deliveries(limit=1000)
            assert len(rows) == total and {r.state for r in rows} == {"delivered"}
        finally:
            await service.stop()
            await outbox.close()
            await store.close()

    asyncio.run(first_process())
    asyncio.run(second_process())

    assert inbox.forged == []
    ids = [got["id"] for got in inbox.accepted]
    assert len(ids) == len(set(ids)), "a delivery arrived twice"
    arrived: dict[str, list[int]] = {}
    for got in inbox.accepted:
        arrived.setdefault(got["job"], []).append(got["seq"])
    assert arrived == expected(db, hooks)  # every wanted event, exactly once, in order per job
    assert "silent" not in arrived
    types = [got["type"] for got in inbox.accepted if got["job"] == "all-a"]
    assert types == [
        "job.queued",
        "job.running",
        "job.progress",
        "job.progress",
        "job.succeeded",
    ]
    assert [got["type"] for got in inbox.accepted if got["job"] == "fails"] == ["job.failed"]
    final = [got for got in inbox.accepted if got["type"] == "job.succeeded"]
    assert {got["status"] for got in final} == {"succeeded"}
