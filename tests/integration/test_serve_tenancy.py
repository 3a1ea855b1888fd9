"""Tenancy on the real gateway: `comfyfleet serve` with keys on, real CPU ComfyUI, and keys made
with the real `comfyfleet keys create`, checked the way a user of each key would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import (
    Server,
    model_free_graph,
    png_size,
    serve_config,
    sleep_graph,
)

pytestmark = pytest.mark.comfyui


def create_key(ws: Path, name: str, *scopes: str) -> str:
    """A key made by `comfyfleet keys create`, as an operator makes one."""
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    proc = subprocess.run(
        [sys.executable, "-m", "comfyfleet", "keys", "create", "-n", name, "-q", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COMFYFLEET_WORKSPACE": str(ws)},
        check=True,
    )
    return proc.stdout.strip()


@dataclass
class Env:
    server: Server
    clients: dict[str, httpx.Client]
    tokens: dict[str, str]

    def ws_url(self) -> str:
        return self.server.url.replace("http", "ws") + "/v1/ws"


@pytest.fixture(scope="module")
def env(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("tenancy"))
    serve_config(
        ws,
        fleet={"probe_interval_s": 0.2, "startup_timeout_s": 120},
        auth={"enabled": True, "public_paths": ["/health", "/ready"]},
    )
    tokens = {
        "a": create_key(ws, "team-a"),
        "b": create_key(ws, "team-b"),
        "admin": create_key(ws, "ops", "admin"),
        "reader": create_key(ws, "dashboard", "read"),
        "submitter": create_key(ws, "batch", "submit"),
    }
    server = Server(ws, instances=1).start()
    clients = {
        who: httpx.Client(
            base_url=server.url,
            timeout=120,
            trust_env=False,
            headers={"Authorization": f"Bearer {token}"},
        )
        for who, token in tokens.items()
    }
    try:
        yield Env(server, clients, tokens)
    finally:
        for client in clients.values():
            client.close()
        server.close()


def _run(env: Env, who: str, **headers: str) -> dict[str, Any]:
    body = {"workflow": model_free_graph(time.time_ns() % 1_000_003, "tenancy")}
    answer = env.clients[who].post("/v1/jobs", json=body, headers={"Prefer": "wait=120", **headers})
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    assert job["status"] == "succeeded", job
    return job


def _subscribe(env: Env, who: str, job_id: str) -> dict[str, Any]:
    """The first answer of `WS /v1/ws` to a subscribe for `job_id`."""
    headers = {"Authorization": f"Bearer {env.tokens[who]}"}
    with connect(env.ws_url(), additional_headers=headers, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "job_id": job_id}))
        message: dict[str, Any] = json.loads(ws.recv(timeout=30))
        return message


def _listed(env: Env, who: str) -> list[str]:
    answer = env.clients[who].get("/v1/jobs", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return [job["id"] for job in answer.json()["jobs"]]


def test_another_key_cannot_see_or_touch_a_job(env: Env) -> None:
    job = _run(env, "a")
    job_id, image = job["id"], job["outputs"][0]["url"]
    b = env.clients["b"]
    for method, path in [
        ("GET", "/v1/jobs/{}"),
        ("POST", "/v1/jobs/{}/cancel"),
        ("GET", "/v1/jobs/{}/events"),
    ]:
        theirs = b.request(method, path.format(job_id))
        missing = b.request(method, path.format("no-such-job"))
        assert theirs.status_code == 404
        assert theirs.json()["error"]["code"] == "job_not_found"
        assert theirs.text == missing.text.replace("no-such-job", job_id)  # the very same answer
    output = b.get(image)
    assert (output.status_code, output.json()["error"]["code"]) == (404, "output_not_found")
    assert job_id not in _listed(env, "b")
    refused = _subscribe(env, "b", job_id)
    assert (refused["event"], refused["data"]["code"]) == ("error", "job_not_found")

    # the owner sees all of it
    assert png_size(env.clients["a"].get(image).raise_for_status().content) == (32, 32)
    assert job_id in _listed(env, "a")
    assert _subscribe(env, "a", job_id)["event"] == "subscribed"


def test_another_keys_cancel_leaves_a_running_job_running(env: Env) -> None:
    body = {"workflow": sleep_graph(2.0, time.time_ns() % 1_000_003)}
    job_id = env.clients["a"].post("/v1/jobs", json=body).json()["id"]
    cancel = env.clients["b"].post(f"/v1/jobs/{job_id}/cancel")
    assert (cancel.status_code, cancel.json()["error"]["code"]) == (404, "job_not_found")
    deadline = time.monotonic() + 60
    while (job := env.clients["a"].get(f"/v1/jobs/{job_id}").json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert (job["status"], job["cancel_requested"]) == ("succeeded", False)


def test_an_admin_key_sees_every_keys_jobs(env: Env) -> None:
    a_job, b_job = _run(env, "a")["id"], _run(env, "b")["id"]
    listed = _listed(env, "admin")
    assert a_job in listed and b_job in listed
    assert b_job not in _listed(env, "a") and a_job not in _listed(env, "b")
    assert env.clients["admin"].get(f"/v1/jobs/{a_job}").json()["status"] == "succeeded"


def test_a_read_only_key_reads_but_cannot_submit(env: Env) -> None:
    answer = env.clients["reader"].post("/v1/jobs", json={"workflow": model_free_graph(1)})
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert (error["code"], error["details"]["needs"]) == ("forbidden", "submit")
    assert _listed(env, "reader") == []  # it reads its own jobs: it has none


def test_a_submit_only_key_cannot_open_the_event_socket(env: Env) -> None:
    headers = {"Authorization": f"Bearer {env.tokens['submitter']}"}
    with pytest.raises(InvalidStatus) as refused:
        connect(env.ws_url(), additional_headers=headers, open_timeout=10)
    assert refused.value.response.status_code == 403


def test_the_same_idempotency_key_gives_each_key_its_own_job(env: Env) -> None:
    body = {"workflow": model_free_graph(time.time_ns() % 1_000_003, "idem")}
    headers = {"Idempotency-Key": f"order-{time.time_ns()}", "Prefer": "wait=120"}
    first = env.clients["a"].post("/v1/jobs", json=body, headers=headers)
    other = env.clients["b"].post("/v1/jobs", json=body, headers=headers)
    assert (first.status_code, other.status_code) == (200, 200), other.text
    assert other.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in other.headers
    assert other.json()["status"] == "succeeded"
    assert env.clients["b"].get(f"/v1/jobs/{other.json()['id']}").status_code == 200
    assert env.clients["a"].get(f"/v1/jobs/{other.json()['id']}").status_code == 404

    replay = env.clients["a"].post("/v1/jobs", json=body, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert replay.json()["outputs"] == first.json()["outputs"]
