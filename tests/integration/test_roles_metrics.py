"""Metrics with the roles apart, on PostgreSQL: a `comfyfleet gateway` and a `comfyfleet agent
--metrics-port` (one CPU instance). One scrape of the gateway gives the fleet's job totals (read
from the store's events, though no job ran in its process); the phases of each attempt are
counted by the agent that ran it and served on its own port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.comfyui_env import free_port_block, workspace_sharing
from tests.integration.serve import model_free_graph
from tests.integration.test_roles_postgres import Role, _config, _log
from tests.postgres_server import PostgresMissing, scratch_database

pytestmark = pytest.mark.comfyui

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    answer = httpx.get(f"{url}/metrics", timeout=30, trust_env=False)
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def roles(comfyui_install: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    try:
        with scratch_database() as postgres:
            shared = tmp_path / "shared"
            (shared / "output").mkdir(parents=True)
            (shared / "input").mkdir()
            agent_ws = workspace_sharing(comfyui_install, tmp_path / "agent")
            gateway_ws = tmp_path / "gateway"
            gateway_ws.mkdir()
            for ws in (agent_ws, gateway_ws):
                _config(ws, shared)
            first = free_port_block(3)
            gateway_port, metrics_port, base = first, first + 1, first + 2
            started = [
                Role(
                    agent_ws,
                    [
                        "agent",
                        "--store",
                        postgres,
                        "-n",
                        "1",
                        "--base-port",
                        str(base),
                        "--metrics-port",
                        str(metrics_port),
                    ],
                    "agent",
                ),
                Role(
                    gateway_ws, ["gateway", "--store", postgres, "--port", str(gateway_port)], "gw"
                ),
            ]
            gateway = f"http://127.0.0.1:{gateway_port}"
            try:
                deadline = time.monotonic() + 240
                while True:
                    for role in started:
                        assert role.proc.poll() is None, f"{role.name} exited: {_log(role)}"
                    try:
                        ready = httpx.get(f"{gateway}/ready", trust_env=False).json()
                        if ready["instances_serving"] == 1:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, "the roles did not start in time"
                    time.sleep(0.3)
                yield gateway, f"http://127.0.0.1:{metrics_port}"
            finally:
                for role in started:
                    role.stop()
    except PostgresMissing as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")


def test_the_gateway_counts_the_fleets_jobs_and_the_agent_its_own_work(
    roles: tuple[str, str],
) -> None:
    gateway, agent = roles
    seed = time.time_ns() % 1_000_000_007
    fail = {"1": {"class_type": "FleetFail", "inputs": {"message": "no", "seed": seed}}}
    graphs = [model_free_graph(seed + n, f"r{n}") for n in range(3)] + [fail]
    with httpx.Client(base_url=gateway, timeout=120, trust_env=False) as http:
        jobs = [
            http.post("/v1/jobs?wait=true", json={"workflow": graph}).json() for graph in graphs
        ]
    assert [job["status"] for job in jobs] == ["succeeded"] * 3 + ["failed"]

    deadline = time.monotonic() + 10
    while True:
        at_gateway = scrape(gateway)
        ended = sum(
            value(at_gateway, "comfyfleet_jobs_total", status=s) or 0
            for s in ("succeeded", "failed")
        )
        if ended >= len(jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert value(at_gateway, "comfyfleet_jobs_total", status="succeeded") == 3
    assert value(at_gateway, "comfyfleet_jobs_total", status="failed") == 1
    assert value(at_gateway, "comfyfleet_job_failures_total", code="node_error") == 1
    assert value(at_gateway, "comfyfleet_agents_alive") == 1
    # No job ran in the gateway's process: it shows none of an agent's numbers.
    assert value(at_gateway, "comfyfleet_job_phase_seconds_count", phase="queued") is None

    at_agent = scrape(agent)
    attempts = sum(job["attempts"] for job in jobs)
    for phase, count in (("queued", attempts), ("running", attempts), ("storing", 3)):
        assert value(at_agent, "comfyfleet_job_phase_seconds_count", phase=phase) == count
    assert value(at_agent, "comfyfleet_instance_restarts_total", index="0") == 0
    assert value(at_agent, "comfyfleet_jobs_total", status="succeeded") is None
    missing = httpx.get(f"{agent}/v1/jobs", trust_env=False)
    assert missing.status_code == 404  # the agent's port serves /metrics and nothing else
