"""`comfyfleet serve` with two real CPU instances: jobs in, files out, nothing lost."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import (
    Server,
    model_free_graph,
    png_size,
    serve_config,
    sleep_graph,
)
from tests.tiny_model import CHECKPOINT_NAME, tiny_checkpoint, tiny_sd15_graph

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ckpt_dir = comfyui_install / "models"
    tiny_checkpoint(comfyui_install)
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("serve"))
    serve_config(ws, models_root=str(ckpt_dir))
    srv = Server(ws).start()
    yield srv
    srv.close()


def _seed() -> int:
    return time.time_ns() % 1_000_000_007


def test_a_sync_job_returns_its_image(server: Server) -> None:
    answer = server.submit(model_free_graph(_seed()), wait=True)
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "succeeded" and job["attempts"] == 1
    [image] = job["outputs"]
    assert image["kind"] == "images" and image["url"].startswith(f"/v1/outputs/{job['id']}/")
    download = server.http.get(image["url"])
    assert download.headers["content-type"] == "image/png"
    assert png_size(download.content) == (32, 32)
    assert job["timings"]["running_s"] >= 0 and job["timings"]["queued_s"] >= 0


def test_a_sync_job_can_inline_its_outputs(server: Server) -> None:
    job = server.submit(model_free_graph(_seed()), wait=True, inline=True).json()
    [image] = job["outputs"]
    assert image["content_type"] == "image/png"
    assert png_size(base64.b64decode(image["base64"])) == (32, 32)


def test_an_async_job_is_accepted_then_finishes(server: Server) -> None:
    answer = server.submit(sleep_graph(0.5, _seed()))
    assert answer.status_code == 202
    body = answer.json()
    assert (
        body["status"] in ("queued", "running") and body["urls"]["self"] == f"/v1/jobs/{body['id']}"
    )
    [job] = server.wait_all([body["id"]], 60)
    assert job["status"] == "succeeded"
    assert {o["kind"] for o in job["outputs"]} == {"images", "text"}


def test_the_tiny_sd15_graph_runs_through_the_api(server: Server) -> None:
    graph = tiny_sd15_graph(CHECKPOINT_NAME, seed=_seed(), prefix="sd")
    answer = server.http.post("/v1/jobs", json={"workflow": graph}, headers={"Prefer": "wait=120"})
    job = answer.json()
    assert job["status"] == "succeeded", job
    image = next(o for o in job["outputs"] if o["kind"] == "images")
    assert png_size(server.http.get(image["url"]).content) == (64, 64)


def test_forty_jobs_at_once_use_both_instances_and_none_is_lost(server: Server) -> None:
    base = _seed()
    graphs = [model_free_graph(base + n, "burst") for n in range(40)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda g: server.submit(g), graphs))
    assert {a.status_code for a in answers} == {202}
    ids = [a.json()["id"] for a in answers]
    assert len(set(ids)) == 40
    jobs = server.wait_all(ids, 180)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["instance"] for j in jobs} == {0, 1}
    assert all(j["attempts"] == 1 for j in jobs)
    for job in jobs:  # exactly one file per job, in the job's own folder
        assert len(list((server.ws / "output" / job["id"]).iterdir())) == 1


def test_a_failing_node_fails_the_job_with_its_message(server: Server) -> None:
    fail = {"1": {"class_type": "FleetFail", "inputs": {"message": "no cats", "seed": _seed()}}}
    job = server.submit(fail, wait=True).json()
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["message"] == "node 1 (FleetFail): RuntimeError: no cats"
    assert (job["error"]["node_id"], job["error"]["node_type"]) == ("1", "FleetFail")


def test_bad_requests_are_4xx_naming_the_problem(server: Server) -> None:
    unknown = server.submit({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == "node 1: unknown node type 'NoSuchNode'"
    ui = server.submit({"nodes": [], "links": []})  # the editor's format, but nothing in it
    assert ui.status_code == 422
    assert ui.json()["error"]["message"] == "workflow must be a non-empty JSON object of nodes"
    bad_json = server.http.post(
        "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    link = server.submit({"1": {"class_type": "ImageInvert", "inputs": {"image": ["7", 0]}}})
    assert link.status_code == 400
    assert "input 'image' links to node 7" in link.json()["error"]["message"]
    missing = server.http.get("/v1/jobs/does-not-exist")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    escape = server.http.get("/v1/outputs/x/..%2F..%2Fetc%2Fpasswd")
    assert escape.status_code in (400, 404)


def test_cancel_a_queued_and_a_running_job(server: Server) -> None:
    seeds = [_seed() + n for n in range(6)]
    ids = [server.submit(sleep_graph(5.0, s)).json()["id"] for s in seeds]
    deadline = time.monotonic() + 60
    while server.job(ids[0])["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    queued = server.http.post(f"/v1/jobs/{ids[-1]}/cancel").json()
    assert queued["status"] == "cancelled"
    time.sleep(1.0)  # let the first job get going inside ComfyUI
    running = server.http.post(f"/v1/jobs/{ids[0]}/cancel")
    assert running.status_code == 200
    [job] = server.wait_all([ids[0]], 30)
    assert job["status"] == "cancelled" and job["timings"]["finished_at"] is not None
    assert not (server.ws / "output" / ids[-1]).exists()
    for job_id in ids[1:-1]:
        server.http.post(f"/v1/jobs/{job_id}/cancel")
    server.wait_all(ids, 60)


def test_listing_and_health(server: Server) -> None:
    assert server.http.get("/health").json() == {"status": "ok"}
    ready = server.http.get("/ready").json()
    assert ready["ready"] and ready["instances_serving"] == 2
    first = server.http.get("/v1/jobs", params={"limit": 3}).json()
    assert len(first["jobs"]) == 3 and first["next_cursor"]
    more = server.http.get("/v1/jobs", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert not {j["id"] for j in first["jobs"]} & {j["id"] for j in more["jobs"]}
    failed = server.http.get("/v1/jobs", params={"status": "failed"}).json()["jobs"]
    assert failed and {j["status"] for j in failed} == {"failed"}
    states = server.http.get("/v1/instances").json()["instances"]
    assert [s["state"] in ("ready", "busy") for s in states] == [True, True]
    assert server.http.get("/docs").status_code == 200


def test_an_instance_killed_mid_job_retries_it(server: Server) -> None:
    job_id = server.submit(sleep_graph(3.0, _seed())).json()["id"]
    deadline = time.monotonic() + 60
    while server.job(job_id)["instance"] is None and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until it is on an instance
    time.sleep(0.5)  # and sleeping inside ComfyUI
    victim = server.job(job_id)["instance"]
    pid = next(
        i["pid"]
        for i in server.http.get("/v1/instances").json()["instances"]
        if i["index"] == victim
    )
    os.kill(pid, signal.SIGKILL)
    [job] = server.wait_all([job_id], 120)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert len(list((server.ws / "output" / job_id).iterdir())) == 1
