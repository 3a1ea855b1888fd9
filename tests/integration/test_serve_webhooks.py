"""Webhooks through a receiver that is down: nothing lost, nothing twice, in order per job,
across a restart of `comfyfleet serve` while deliveries are still pending."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.jobs import SqliteJobStore
from comfyfleet.webhooks import WebhookVerificationError, generate_secret, verify
from tests.comfyui_env import free_port_block, workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config

pytestmark = pytest.mark.comfyui

DOWN_FOR_S = 30.0
"""How long the receiver stays down after the burst is submitted (the issue's scenario)."""


class Receiver:
    """A webhook endpoint that checks every signature and keeps what it was sent."""

    def __init__(self, port: int, secret: str) -> None:
        self.port = port
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.arrived: list[float] = []
        """When each delivery arrived (time.monotonic()), in the order of `ids`."""
        self.forged = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    verify(receiver.secret, dict(self.headers.items()), body)
                except WebhookVerificationError:
                    with receiver._lock:
                        receiver.forged += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.arrived.append(time.monotonic())
                    receiver.ids.append(self.headers["webhook-id"])
                    receiver.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def server(comfyui_install: Path, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    secret = generate_secret()
    ws = workspace_sharing(comfyui_install, tmp_path / "ws")
    serve_config(
        ws,
        webhooks={
            "secret": secret,
            "allow_private_targets": True,  # the receiver is on loopback
            "initial_backoff_s": 1.0,
            "max_backoff_s": 4.0,
            "poll_s": 0.5,
        },
    )
    srv = Server(ws)
    yield srv, secret
    srv.close()


def test_a_receiver_down_for_30s_and_a_restart_lose_and_repeat_nothing(
    server: tuple[Server, str],
) -> None:
    srv, secret = server
    srv.start()
    port = free_port_block(1)
    receiver = Receiver(port, secret)
    hook = {"url": f"http://127.0.0.1:{port}/hook", "events": ["*"]}
    ids = [
        srv.http.post(
            "/v1/jobs", json={"workflow": model_free_graph(n, f"hook{n}"), "webhook": hook}
        ).json()["id"]
        for n in range(8)
    ]
    began = time.monotonic()
    srv.wait_all(ids, 120)
    time.sleep(2)
    srv.stop()  # deliveries are still pending: the receiver has been down all along
    srv.start()
    time.sleep(max(0.0, DOWN_FOR_S - (time.monotonic() - began)))
    receiver.start()
    try:
        expected = _expected_events(srv, ids)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(receiver.received) < expected:
            time.sleep(0.5)
    finally:
        receiver.stop()
    assert receiver.forged == 0
    assert len(receiver.ids) == len(set(receiver.ids)), "a delivery arrived twice"
    assert len(receiver.received) == expected
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for payload in receiver.received:
        by_job[payload["data"]["id"]].append(payload)
    assert set(by_job) == set(ids)
    for payloads in by_job.values():
        seqs = [p["data"]["event"]["seq"] for p in payloads]
        assert seqs == sorted(seqs), "events of one job arrived out of order"
        assert payloads[-1]["type"] == "job.succeeded"
    failed = srv.http.get("/v1/webhooks/deliveries", params={"state": "failed"}).json()
    assert failed["deliveries"] == []


def _expected_events(srv: Server, ids: list[str]) -> int:
    """Every event of every job, as the job store has them (the relay maps each to one)."""

    async def count() -> int:
        store = SqliteJobStore.open(srv.ws / "state" / "jobs.db")
        try:
            total = 0
            for job_id in ids:
                total += len(await store.events(job_id))
            return total
        finally:
            await store.close()

    return asyncio.run(count())
