"""Several machines' worth of processes on one PostgreSQL: 2 `comfyfleet gateway` + 2
`comfyfleet agent` (two CPU ComfyUI instances each), talking only through the store. 200 jobs
submitted through both gateways complete once each and each job's webhook is delivered once;
either gateway lists every agent's instances and machines, reads an instance's log and restarts
it (a command the agent takes from the store), and shows them on its dashboard; SSE and the
WebSocket follow a job through the gateway that did not take it; an agent killed with SIGKILL
mid-burst loses its leases and its jobs complete on the other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import websockets.sync.client
import yaml

from comfyfleet.webhooks import generate_secret
from tests.comfyui_env import free_port_block, workspace_sharing
from tests.integration.serve import model_free_graph, sleep_graph
from tests.integration.test_serve_webhooks import Receiver
from tests.postgres_server import PostgresMissing, scratch_database

pytestmark = pytest.mark.comfyui

LEASE_S = 3.0
BURST = 200
AGENT_TIMEOUT_S = 4.0


def _config(ws: Path, shared: Path) -> None:
    settings = {
        "output_dir": str(shared / "output"),  # one "disk" for outputs, as S3 would be
        "input_dir": str(shared / "input"),
        "fleet": {"probe_interval_s": 0.2, "startup_timeout_s": 120, "stop_grace_s": 10},
        "serve": {
            "lease_s": LEASE_S,
            "agent_timeout_s": AGENT_TIMEOUT_S,
            "agent_heartbeat_s": 0.5,
            "max_queued": 5000,
        },
        "webhooks": {"secret": SECRET, "allow_private_targets": True, "poll_s": 0.5},
    }
    (ws / "comfyfleet.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")


SECRET = generate_secret()


class Role:
    """One `comfyfleet gateway|agent` process."""

    def __init__(self, ws: Path, args: list[str], name: str) -> None:
        self.ws = ws
        self.name = name
        log = (ws.parent / f"{name}.out").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "comfyfleet", *args, "-w", str(ws)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
            start_new_session=True,  # killing the agent's group also kills its ComfyUI
        )
        log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        with_group_gone(self.proc.pid)


def with_group_gone(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Fleet:
    def __init__(
        self, gateways: list[str], agents: list[Role], roles: list[Role], store: str
    ) -> None:
        self.urls = gateways
        self.http = [httpx.Client(base_url=u, timeout=60, trust_env=False) for u in gateways]
        self.agents = agents
        self.roles = roles
        self.store = store

    def webhook_sender(self) -> str | None:
        """The agent holding the fleet's `webhooks` lease (the one that sends), as stored."""
        with psycopg.connect(self.store) as conn:
            row = conn.execute("SELECT holder FROM fleet_leases WHERE name = 'webhooks'").fetchone()
        return None if row is None else str(row[0])

    def wait_serving(self, count: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for role in self.roles:
                if role.proc.poll() is not None:
                    raise AssertionError(f"{role.name} exited: {_log(role)}")
            try:
                answers = [h.get("/ready").json() for h in self.http]
                if all(a["instances_serving"] == count for a in answers):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"fleet not serving {count} instances in time")
            time.sleep(0.3)


def _log(role: Role) -> str:
    return (role.ws.parent / f"{role.name}.out").read_text()[-3000:]


@pytest.fixture
def fleet(comfyui_install: Path, tmp_path: Path) -> Iterator[Fleet]:
    try:
        with scratch_database() as postgres:  # a database of this test's own
            yield from _fleet(comfyui_install, postgres, tmp_path)
    except PostgresMissing as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")


def _fleet(comfyui_install: Path, postgres: str, tmp_path: Path) -> Iterator[Fleet]:
    shared = tmp_path / "shared"
    (shared / "output").mkdir(parents=True)
    (shared / "input").mkdir()
    roles: list[Role] = []
    agents: list[Role] = []
    for n in range(2):
        ws = workspace_sharing(comfyui_install, tmp_path / f"agent{n}")
        _config(ws, shared)
        base = str(free_port_block(2))
        agent = Role(ws, ["agent", "--store", postgres, "-n", "2", "--base-port", base], f"a{n}")
        agents.append(agent)
        roles.append(agent)
    gw_ws = tmp_path / "gateway"
    gw_ws.mkdir()
    _config(gw_ws, shared)
    urls = []
    running: Fleet | None = None
    try:
        for n in range(2):
            port = free_port_block(1)
            roles.append(
                Role(gw_ws, ["gateway", "--store", postgres, "--port", str(port)], f"g{n}")
            )
            urls.append(f"http://127.0.0.1:{port}")
            time.sleep(1.0)  # the first makes the shared idempotency secret
        running = Fleet(urls, agents, roles, postgres)
        running.wait_serving(2 * len(agents))
        yield running
    finally:
        for role in roles:
            role.stop()
        if running is not None:
            for client in running.http:
                client.close()


def test_two_gateways_two_agents_through_one_postgres(fleet: Fleet) -> None:
    first, second = fleet.http
    for gateway in fleet.http:  # either gateway lists every agent's instances
        listed = gateway.get("/v1/instances").json()
        assert len(listed["agents"]) == 2
        assert {i["agent"]["id"] for i in listed["instances"]} == {
            a["id"] for a in listed["agents"]
        }
        assert all(i["state"] in ("ready", "busy") for i in listed["instances"])
        assert all(a["machine"]["cpu"]["count"] >= 1 for a in listed["agents"])
    _control_through_the_store(fleet)

    # Taken by the first gateway, followed through the second: SSE and the WebSocket.
    job_id = first.post("/v1/jobs", json={"workflow": sleep_graph(1.0, 7)}).json()["id"]
    ws_url = fleet.urls[1].replace("http", "ws") + "/v1/ws"
    with websockets.sync.client.connect(ws_url) as socket:
        socket.send(json.dumps({"op": "subscribe", "job_id": job_id}))
        with second.stream("GET", f"/v1/jobs/{job_id}/events") as sse:
            lines = [line for line in sse.iter_lines() if line.startswith("event:")]
        assert lines[-1] == "event: status" and "event: executed" in lines
        statuses = []
        deadline = time.monotonic() + 60
        while "succeeded" not in statuses and time.monotonic() < deadline:
            message = json.loads(socket.recv(timeout=30))
            if message.get("job_id") == job_id and message["event"] == "status":
                statuses.append(message["data"]["status"])
    assert statuses[-1] == "succeeded"

    # A burst through both gateways, each job with a webhook; one agent is killed mid-burst.
    receiver = Receiver(free_port_block(1), SECRET)
    receiver.start()
    hook = {"url": f"http://127.0.0.1:{receiver.port}/hook", "events": ["job.succeeded"]}
    ids: list[str] = []
    for n in range(BURST):
        graph = sleep_graph(0.4, 1000 + n) if n % 8 == 0 else model_free_graph(1000 + n, "burst")
        answer = fleet.http[n % 2].post("/v1/jobs", json={"workflow": graph, "webhook": hook})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    victim_id = _agent_running_something(first, ids)
    (victim,) = [a for a in fleet.agents if f"-{a.proc.pid}-" in victim_id]  # ids name the pid
    victim_sent_webhooks = fleet.webhook_sender() == victim_id
    os.killpg(victim.proc.pid, signal.SIGKILL)  # the agent and its ComfyUI, no goodbye
    killed_at = time.monotonic()

    jobs = _wait_all(second, ids, timeout=300)
    assert Counter(j["status"] for j in jobs) == {"succeeded": len(ids)}, [
        (j["id"], j["status"], j["error"]) for j in jobs if j["status"] != "succeeded"
    ]
    retried = [j for j in jobs if j["attempts"] > 1]
    assert retried, "no job was in flight on the killed agent"
    for job in jobs:  # exactly once: one succeeded event per job, read through either gateway
        with fleet.http[hash(job["id"]) % 2].stream("GET", f"/v1/jobs/{job['id']}/events") as sse:
            data = [json.loads(line[5:]) for line in sse.iter_lines() if line.startswith("data:")]
        statuses = [(d.get("data") or d).get("status") for d in data]
        assert statuses.count("succeeded") == 1, (job["id"], data[-3:])
    assert time.monotonic() - killed_at >= LEASE_S * 0.5  # the retried jobs waited for a lease
    # The burst may end before the killed agent's silence reaches its timeout: the gateway
    # calls it gone from then on (its last heartbeat came before the kill).
    time.sleep(max(0.0, killed_at + AGENT_TIMEOUT_S + 0.5 - time.monotonic()))
    after = second.get("/v1/instances").json()
    gone = [i for i in after["instances"] if i["agent"]["id"] == victim_id]
    assert all(i["state"] == "gone" for i in gone)
    assert second.get("/ready").json()["instances_serving"] == 2

    deadline = time.monotonic() + 120
    while len(receiver.received) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2 * LEASE_S)  # long enough for a second delivery of anything, were there one
    receiver.stop()
    assert receiver.forged == 0
    # Each job's event became one delivery (one webhook-id), and every one arrived.
    ids_of_job: dict[str, set[str]] = {}
    for webhook_id, payload in zip(receiver.ids, receiver.received, strict=True):
        ids_of_job.setdefault(payload["data"]["id"], set()).add(webhook_id)
    assert sorted(ids_of_job) == sorted(ids)
    assert all(len(each) == 1 for each in ids_of_job.values())
    # A delivery arrives again, under its own id, only when the agent sending it died between
    # the receiver's answer and recording it: those had arrived before the kill.
    first_arrival: dict[str, float] = {}
    for webhook_id, at in zip(receiver.ids, receiver.arrived, strict=True):
        if webhook_id in first_arrival:
            assert victim_sent_webhooks and first_arrival[webhook_id] <= killed_at, webhook_id
        first_arrival.setdefault(webhook_id, at)


def _control_through_the_store(fleet: Fleet) -> None:
    """A gateway that runs no instance reads one's log and restarts it: both through the
    store, to and from the agent that runs it."""
    gateway = fleet.http[1]
    agent_id = gateway.get("/v1/instances").json()["agents"][0]["id"]
    ref = f"{agent_id}:0"
    logs = gateway.get(f"/v1/instances/{ref}/logs")
    assert logs.status_code == 200, logs.text
    assert any("To see the GUI go to" in line for line in logs.json()["lines"])
    before = _instance(gateway, agent_id)
    restart = gateway.post(f"/v1/instances/{ref}/restart")
    assert restart.status_code == 202, restart.text
    deadline = time.monotonic() + 120
    while True:
        now = _instance(gateway, agent_id)
        if now["pid"] not in (None, before["pid"]) and now["state"] == "ready":
            break
        assert time.monotonic() < deadline, f"instance {ref} not back: {now['state']}"
        time.sleep(0.3)
    assert now["restarts"] == before["restarts"] + 1
    page = gateway.get("/dashboard/")  # keys are off, and this is the gateway's own machine
    assert page.status_code == 200
    for each in gateway.get("/v1/instances").json()["agents"]:
        assert f'data-instance="{each["id"]}:0"' in page.text
    fleet.wait_serving(2 * len(fleet.agents))


def _instance(gateway: httpx.Client, agent_id: str, index: int = 0) -> dict[str, Any]:
    listed = gateway.get("/v1/instances").json()["instances"]
    (found,) = [i for i in listed if i["agent"]["id"] == agent_id and i["index"] == index]
    return dict(found)


def _agent_running_something(gateway: httpx.Client, ids: list[str]) -> str:
    """The id of an agent that holds a running job of the burst (through the registry:
    the job's instance index and a ready agent)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = gateway.get("/v1/jobs", params={"status": "running", "limit": 50}).json()
        if any(j["id"] in ids for j in running["jobs"]):
            agents = gateway.get("/v1/instances").json()["instances"]
            busy = [i["agent"]["id"] for i in agents if i["free_slots"] < 2]
            if busy:
                return str(busy[0])
        time.sleep(0.05)
    raise AssertionError("nothing of the burst ran")


def _wait_all(gateway: httpx.Client, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [gateway.get(f"/v1/jobs/{i}").json() for i in ids]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            pending = [j["id"] for j in jobs if j["status"] not in ("succeeded", "failed")]
            raise AssertionError(f"{len(pending)} jobs not finished in {timeout}s: {pending[:5]}")
        time.sleep(0.5)
