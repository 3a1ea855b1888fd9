"""Network faults between agents and PostgreSQL, with real processes.

**A cut link.** Agent B runs in a network namespace of its own (`tests/netns.py`), with its
ComfyUI instance inside the same namespace; agent A and a gateway run on this machine. Everyone
uses the machine's PostgreSQL: A and the gateway on loopback, B through a TCP forwarder the test
runs on the host's end of the veth pair (so B's only way to the store is the link the test
cuts, and the shared PostgreSQL needs no change to its listen addresses). The webhook receiver
listens on the host's end too, where both agents can reach it; A starts first, so it holds the
fleet's webhook lease. Mid-job, B's link is cut: its leases lapse (`serve.lease_s` is short
here), its jobs run again on A and succeed there; B keeps running, its store calls fail and
are retried, it keeps the outputs its instance finished and, once the link is back, reports them
and is refused (the jobs moved on), says so in its log and serves again. Each job ends with
exactly one `succeeded` event and the receiver gets each job's `job.succeeded` exactly once.

**Killed backends.** During a burst through a gateway with one agent, every session of the
test's database is terminated (`pg_terminate_backend`, as an administrator or a failover does)
a few times: every accepted job completes, exactly once.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from comfyfleet.webhooks import WebhookVerificationError, generate_secret, verify
from tests.comfyui_env import free_port_block, workspace_sharing
from tests.integration.serve import model_free_graph, sleep_graph
from tests.netns import Forwarder, Namespace, NamespaceRefused, namespace
from tests.postgres_server import PostgresMissing, scratch_database, terminate_backends

pytestmark = pytest.mark.comfyui

LEASE_S = 3.0
SECRET = generate_secret()


def _config(ws: Path, shared: Path) -> None:
    settings = {
        "output_dir": str(shared / "output"),
        "input_dir": str(shared / "input"),
        "fleet": {"probe_interval_s": 0.2, "startup_timeout_s": 120, "stop_grace_s": 10},
        "serve": {
            "lease_s": LEASE_S,
            "agent_timeout_s": 4.0,
            "agent_heartbeat_s": 0.5,
            "max_queued": 5000,
        },
        "webhooks": {
            "secret": SECRET,
            "allow_private_targets": True,  # the receiver is on the test's own veth address
            "initial_backoff_s": 0.5,
            "max_backoff_s": 2.0,
            "poll_s": 0.3,
        },
    }
    (ws / "comfyfleet.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")


class Proc:
    """One `comfyfleet gateway|agent` process (in a namespace when `wrap` says so)."""

    def __init__(self, ws: Path, args: list[str], name: str, wrap: Namespace | None = None):
        self.ws, self.name = ws, name
        self.log = ws.parent / f"{name}.out"
        argv = [sys.executable, "-m", "comfyfleet", *args, "-w", str(ws)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                wrap.command(argv) if wrap is not None else argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200"},
                start_new_session=True,  # its group holds its ComfyUI too
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


class Receiver:
    """A webhook endpoint checking each signature and keeping (webhook-id, payload)."""

    def __init__(self, host: str) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.forged = 0
        lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    verify(SECRET, dict(self.headers.items()), body)
                except WebhookVerificationError:
                    with lock:
                        receiver.forged += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with lock:
                    receiver.received.append((self.headers["webhook-id"], json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def succeeded(self) -> Counter[str]:
        return Counter(p["data"]["id"] for _, p in self.received if p["type"] == "job.succeeded")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _wait(what: str, check: Any, timeout: float, procs: list[Proc]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        for each in procs:
            if each.proc.poll() is not None:
                raise AssertionError(f"{each.name} exited: {each.output()[-3000:]}")
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:g}s: {what}")
        time.sleep(0.2)


def _jobs(http: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    return [http.get(f"/v1/jobs/{i}").json() for i in ids]


def _all_done(http: httpx.Client, ids: list[str]) -> list[dict[str, Any]] | None:
    jobs = _jobs(http, ids)
    return jobs if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs) else None


def _succeeded_events(http: httpx.Client, job_id: str) -> int:
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as sse:
        data = [json.loads(line[5:]) for line in sse.iter_lines() if line.startswith("data:")]
    return [(d.get("data") or d).get("status") for d in data].count("succeeded")


def _serving(http: httpx.Client, count: int) -> bool:
    return bool(http.get("/ready").json()["instances_serving"] == count)


def _workers(database: str, ids: list[str]) -> dict[str, tuple[str, str]]:
    """(status, worker) of each job, read straight from the database."""
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, status, worker FROM jobs WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


@pytest.fixture
def postgres() -> Iterator[str]:
    try:
        with scratch_database() as url:
            yield url
    except PostgresMissing as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")


@pytest.fixture
def netns() -> Iterator[Namespace]:
    try:
        with namespace() as made:
            yield made
    except NamespaceRefused as exc:
        pytest.skip(f"cannot make a network namespace here: {exc}")


def _agent_id(proc: Proc, http: httpx.Client) -> str:
    agents = http.get("/v1/instances").json()["agents"]
    (found,) = [a["id"] for a in agents if f"-{proc.proc.pid}-" in a["id"]]
    return str(found)


def test_an_agent_cut_off_mid_job_is_replaced_and_its_late_results_refused(
    comfyui_install: Path, tmp_path: Path, postgres: str, netns: Namespace
) -> None:
    shared = tmp_path / "shared"
    (shared / "output").mkdir(parents=True)
    (shared / "input").mkdir()
    forwarder = Forwarder(netns.host_ip, ("127.0.0.1", 5432))
    through_link = postgres.replace("127.0.0.1:5432", f"{netns.host_ip}:{forwarder.port}")
    assert through_link != postgres
    receiver = Receiver(netns.host_ip)
    procs: list[Proc] = []
    gw_ws = tmp_path / "gateway"
    gw_ws.mkdir()
    _config(gw_ws, shared)
    port = free_port_block(1)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, trust_env=False)
    try:
        procs.append(Proc(gw_ws, ["gateway", "--store", postgres, "--port", str(port)], "gw"))
        ws_a = workspace_sharing(comfyui_install, tmp_path / "agent_a")
        _config(ws_a, shared)
        base = str(free_port_block(1))
        agent_a = Proc(ws_a, ["agent", "--store", postgres, "-n", "1", "--base-port", base], "a")
        procs.append(agent_a)
        _wait("agent A serving", lambda: _serving(http, 1), 240, procs)
        ws_b = workspace_sharing(comfyui_install, tmp_path / "agent_b")
        _config(ws_b, shared)
        args = ["agent", "--store", through_link, "-n", "1", "--base-port", base]
        agent_b = Proc(ws_b, args, "b", wrap=netns)
        procs.append(agent_b)
        _wait("both agents serving", lambda: _serving(http, 2), 240, procs)
        b_id = _agent_id(agent_b, http)

        hook = {"url": receiver.url, "events": ["job.succeeded"]}
        ids = []
        for n in range(4):
            body = {"workflow": sleep_graph(4.0, 500 + n), "webhook": hook}
            answer = http.post("/v1/jobs", json=body)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])

        def b_running() -> list[str]:
            held = _workers(postgres, ids)
            return [
                i for i, (status, worker) in held.items() if (status, worker) == ("running", b_id)
            ]

        on_b = _wait("a job running on agent B", b_running, 60, procs)
        time.sleep(1.0)  # its instance is mid-sleep
        netns.cut()
        cut_at = time.monotonic()
        jobs = _wait("every job finished", lambda: _all_done(http, ids), 120, procs[:2])
        assert [j["status"] for j in jobs] == ["succeeded"] * len(ids), jobs
        assert time.monotonic() - cut_at >= LEASE_S
        # B's jobs ran again (on A, the only agent the store could hear) after B's lease.
        assert all(j["attempts"] == 2 for j in jobs if j["id"] in on_b), jobs

        def kept() -> bool:  # B's instance finished them: their report failed, to be retried
            said = agent_b.output()
            return all(f"job {i}: reporting its result failed" in said for i in on_b)

        _wait("B keeping its results while cut off", kept, 120, procs)
        netns.restore()
        cut_for = time.monotonic() - cut_at

        _wait("agent B serving again", lambda: _serving(http, 2), 90, procs)

        def refused() -> bool:
            said = agent_b.output()
            return all(f"job {i}: the store refused" in said for i in on_b)

        _wait("B's late results refused", refused, 60, procs)
        assert cut_for < 120
        assert _jobs(http, ids) == jobs  # the late results changed nothing
        for job_id in ids:
            assert _succeeded_events(http, job_id) == 1, job_id

        # B works again: a job for each agent's free slots.
        more = [
            http.post("/v1/jobs", json={"workflow": model_free_graph(900 + n)}) for n in range(4)
        ]
        done = _wait(
            "jobs after the link came back",
            lambda: _all_done(http, [m.json()["id"] for m in more]),
            60,
            procs,
        )
        assert {j["status"] for j in done} == {"succeeded"}

        _wait(
            "each job.succeeded delivered", lambda: set(receiver.succeeded()) == set(ids), 60, procs
        )
        time.sleep(3.0)  # a second delivery would come now
        assert receiver.forged == 0
        webhook_ids = [w for w, _ in receiver.received]
        assert len(webhook_ids) == len(set(webhook_ids)), "a delivery arrived twice"
        assert receiver.succeeded() == dict.fromkeys(ids, 1)
    finally:
        for each in reversed(procs):
            each.stop()
        http.close()
        receiver.close()
        forwarder.close()


def test_backends_killed_mid_burst_lose_nothing(
    comfyui_install: Path, tmp_path: Path, postgres: str
) -> None:
    shared = tmp_path / "shared"
    (shared / "output").mkdir(parents=True)
    (shared / "input").mkdir()
    gw_ws = tmp_path / "gateway"
    gw_ws.mkdir()
    _config(gw_ws, shared)
    ws = workspace_sharing(comfyui_install, tmp_path / "agent")
    _config(ws, shared)
    port = free_port_block(1)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, trust_env=False)
    procs: list[Proc] = []
    try:
        procs.append(Proc(gw_ws, ["gateway", "--store", postgres, "--port", str(port)], "gw"))
        base = str(free_port_block(1))
        procs.append(Proc(ws, ["agent", "--store", postgres, "-n", "1", "--base-port", base], "a"))
        _wait("the agent serving", lambda: _serving(http, 1), 240, procs)
        ids: list[str] = []
        killed = 0
        for n in range(80):
            answer = http.post("/v1/jobs", json={"workflow": model_free_graph(2000 + n, "kill")})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
            if n % 20 == 10:
                killed += terminate_backends(postgres)
        assert killed > 0
        jobs = _wait("the burst finished", lambda: _all_done(http, ids), 180, procs)
        assert Counter(j["status"] for j in jobs) == {"succeeded": len(ids)}, [
            (j["id"], j["status"], j["error"]) for j in jobs if j["status"] != "succeeded"
        ]
        for job_id in ids:
            assert _succeeded_events(http, job_id) == 1, job_id
        assert all(p.proc.poll() is None for p in procs)
    finally:
        for each in reversed(procs):
            each.stop()
        http.close()
