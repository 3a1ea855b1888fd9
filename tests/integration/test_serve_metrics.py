"""`/metrics` and JSON logs of a real `comfyfleet serve` (two CPU instances, `--log-format
json`) after a mixed load: jobs that succeed, one whose node raises, one cancelled while it
runs. The counters and histograms, read with Prometheus's own text parser, must match the jobs
as the API shows them; every log line must be a JSON object, and the lines about a job must
name it and its instance."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config, sleep_graph

pytestmark = pytest.mark.comfyui

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("metrics"))
    serve_config(ws)
    srv = Server(ws, args=("--log-format", "json")).start()
    yield srv
    srv.close()


def scrape(server: Server) -> Samples:
    answer = server.http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def phase(samples: Samples, name: str, suffix: str = "count") -> float:
    return value(samples, f"comfyfleet_job_phase_seconds_{suffix}", phase=name)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def mixed_load(server: Server) -> list[dict[str, Any]]:
    """Six model-free jobs, a FleetFail and a FleetSleep cancelled mid-run; their final views."""
    seed = time.time_ns() % 1_000_000_007
    graphs = [model_free_graph(seed + n, f"m{n}") for n in range(6)]
    fail = {"1": {"class_type": "FleetFail", "inputs": {"message": "no", "seed": seed}}}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(server.submit, [*graphs, fail]))
    ids = [answer.json()["id"] for answer in answers]
    slow = server.submit(sleep_graph(60.0, seed)).json()["id"]
    server.wait_all(ids, timeout=120)
    time.sleep(1.0)  # the sleeper, alone now, has started in its instance
    assert server.job(slow)["status"] == "running"
    assert server.http.post(f"/v1/jobs/{slow}/cancel").status_code == 200
    return server.wait_all([*ids, slow], timeout=60)


def test_metrics_count_the_jobs_that_ran_and_logs_name_them(server: Server) -> None:
    before = scrape(server)
    jobs = mixed_load(server)
    statuses = [job["status"] for job in jobs]
    assert statuses == ["succeeded"] * 6 + ["failed", "cancelled"]

    deadline = time.monotonic() + 10  # the counters follow the store's events within a second
    while True:
        after = scrape(server)
        ended = sum(delta(after, before, "comfyfleet_jobs_total", status=s) for s in set(statuses))
        if ended >= len(jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    for status in ("succeeded", "failed", "cancelled"):
        assert delta(after, before, "comfyfleet_jobs_total", status=status) == statuses.count(
            status
        )
    assert delta(after, before, "comfyfleet_jobs_submitted_total") == len(jobs)
    assert delta(after, before, "comfyfleet_job_retries_total") == 0
    assert delta(after, before, "comfyfleet_job_failures_total", code="node_error") == 1

    # Each attempt was claimed once, and ran in ComfyUI (the cancelled one until its cancel);
    # the succeeded ones' outputs were stored; nothing was downloaded.
    attempts = sum(job["attempts"] for job in jobs)
    assert attempts == len(jobs)
    counts = {p: phase(after, p) - phase(before, p) for p in ("queued", "waiting", "running")}
    assert counts == {"queued": attempts, "waiting": attempts, "running": attempts}
    assert phase(after, "storing") - phase(before, "storing") == statuses.count("succeeded")
    assert phase(after, "downloading") == 0
    for name in ("queued", "waiting", "running", "storing"):  # buckets agree with the count
        inf = value(after, "comfyfleet_job_phase_seconds_bucket", phase=name, le="+Inf")
        assert inf == phase(after, name)
    # The time spent queued is what the jobs' own timings say (the API rounds to 0.1 ms).
    queued_s = sum(job["timings"]["queued_s"] for job in jobs)
    measured = phase(after, "queued", "sum") - phase(before, "queued", "sum")
    assert abs(measured - queued_s) < 0.001 * len(jobs)
    cancelled_run = phase(after, "running", "sum") - phase(before, "running", "sum")
    assert 0.8 <= cancelled_run < 60  # the sleeper ran a second or so, not its 60 s

    # The shared state, read from the store: nothing left waiting or running, both instances
    # serving, one agent, no webhook backlog; no restarts.
    assert value(after, "comfyfleet_queue_depth", priority="0") == 0
    assert value(after, "comfyfleet_jobs_running") == 0
    serving = value(after, "comfyfleet_instances", state="ready")
    assert serving + value(after, "comfyfleet_instances", state="busy") == 2
    assert value(after, "comfyfleet_agents_alive") == 1
    assert value(after, "comfyfleet_webhook_deliveries", state="pending") == 0
    for index in ("0", "1"):
        assert value(after, "comfyfleet_instance_restarts_total", index=index) == 0
        assert value(after, "comfyfleet_instance_memory_rss_bytes", index=index) > 100e6
    assert not any(name.startswith("comfyfleet_gpu_") for name, _ in after)  # CPU only
    assert not any(job["id"] in str(labels) for job in jobs for _, labels in after)

    logged = [json.loads(line) for line in (server.ws / "serve.out").read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in logged)
    for job in jobs:
        about = [line for line in logged if line.get("job_id") == job["id"]]
        assert about, f"no log line names job {job['id']}"
        assert all(line["instance"] == job["instance"] for line in about)
        assert any("claimed" in line["message"] for line in about)
    [failed] = [job for job in jobs if job["status"] == "failed"]
    assert any(
        "attempt failed (node_error, final)" in line["message"]
        for line in logged
        if line.get("job_id") == failed["id"]
    )
    started = [line for line in logged if line["message"].endswith("-> ready")]
    assert {line["instance"] for line in started} == {0, 1}
