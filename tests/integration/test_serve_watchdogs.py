"""Watchdogs on a real `comfyfleet serve` with three CPU instances: a job wedged in a node that
blocks without progress and ignores interrupts is detected, its instance restarted, the job
completes on another instance, and the restarted instance comes back ready after its warm-up.
Instance 2's warm-up fails: its state says why."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyfleet.supervise import WARMUP_CLIENT_ID
from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config, sleep_graph

pytestmark = pytest.mark.comfyui

WARM = {"1": {"class_type": "FleetEcho", "inputs": {"text": "warm", "seed": 1}}}
FAILING = {"1": {"class_type": "FleetFail", "inputs": {"message": "no warm-up model", "seed": 1}}}
STALL_S, GRACE_S = 2.0, 2.0


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("watchdogs"))
    (ws / "warm.json").write_text(json.dumps(WARM), encoding="utf-8")
    (ws / "failing.json").write_text(json.dumps(FAILING), encoding="utf-8")
    serve_config(
        ws,
        fleet={
            "probe_interval_s": 0.2,
            "startup_timeout_s": 120,
            "stop_grace_s": 10,
            "start_retries": 0,  # the failing warm-up: fatal at once, no start over and over
        },
        watchdog={
            "stall_s": STALL_S,
            "interrupt_grace_s": GRACE_S,
            "warmup": {"workflow": str(ws / "warm.json")},
            "warmup_instances": {2: {"workflow": str(ws / "failing.json")}},
        },
    )
    running = Server(ws, instances=3, serving=2).start()
    try:
        yield running
    finally:
        running.close()


def instances(server: Server) -> dict[int, dict[str, Any]]:
    listed = server.http.get("/v1/instances").json()["instances"]
    return {each["index"]: each for each in listed}


def warm_ups(port: int) -> dict[str, dict[str, Any]]:
    """The warm-ups in the history of the ComfyUI process now on `port`."""
    history = httpx.get(f"http://127.0.0.1:{port}/history", trust_env=False).json()
    return {k: v for k, v in history.items() if v["prompt"][3].get("client_id") == WARMUP_CLIENT_ID}


def supervisor_log(server: Server) -> str:
    return (server.ws / "logs" / "supervisor.log").read_text(encoding="utf-8")


def sse_events(server: Server, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    text = server.http.get(f"/v1/jobs/{job_id}/events").text
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines and "data" in lines:
            found.append((lines["event"], json.loads(lines["data"])["data"]))
    return found


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)
    return found


def test_an_instance_is_ready_only_after_its_warm_up_ran(server: Server) -> None:
    def idle() -> dict[int, dict[str, Any]] | None:
        listed = instances(server)
        return listed if all(listed[i]["state"] == "ready" for i in (0, 1)) else None

    listed = wait_for("instances 0 and 1 ready", idle, 30)
    log = supervisor_log(server)
    for index in (0, 1):
        record = listed[index]
        [entry] = warm_ups(record["port"]).values()  # one warm-up per process start
        assert entry["status"]["status_str"] == "success"
        assert entry["outputs"]["1"]["text"] == ["warm"]
        messages = entry["status"]["messages"]
        success_ms = next(
            data["timestamp"] for kind, data in messages if kind == "execution_success"
        )
        assert success_ms / 1000 <= record["ready_since"]
        assert f"instance {index}: starting -> warming (running the warm-up workflow)" in log
        assert f"instance {index}: warming -> ready" in log


def test_a_failing_warm_up_is_visible_in_the_instance_state(server: Server) -> None:
    def fatal() -> dict[str, Any] | None:
        now = instances(server)[2]
        return now if now["state"] == "fatal" else None

    record = wait_for("instance 2 fatal", fatal, 60)
    assert record["reason"] == (
        "warm-up failed: node 1 (FleetFail): RuntimeError: no warm-up model;"
        " gave up after 1 failed starts in a row"
    )
    assert "instance 2: warming -> fatal (warm-up failed: node 1 (FleetFail)" in supervisor_log(
        server
    )


def test_a_wedged_instance_is_restarted_and_its_job_completes_on_the_other(
    server: Server,
) -> None:
    seed = time.time_ns() % 1_000_000_007
    # A job on one instance first: the wedged job then goes to the other, which it wedges.
    # FleetSleep reports no progress: it must end sooner than stall_s, or it is stalled too.
    busy_id = server.submit(sleep_graph(STALL_S * 0.75, seed)).json()["id"]

    def placed() -> dict[str, Any] | None:
        first = server.job(busy_id)
        return first if first["instance"] is not None else None

    other = wait_for("the first job's instance", placed, 60)["instance"]
    wedged = 1 - other
    before = instances(server)[wedged]
    wedge = {
        "class_type": "FleetWedge",
        "inputs": {"instance": wedged, "hold_s": 3600.0, "seed": seed},
    }
    job_id = server.submit(model_free_graph(seed + 1, "wedge") | {"4": wedge}).json()["id"]

    busy, job = server.wait_all([busy_id, job_id], 120)
    assert (busy["status"], busy["attempts"]) == ("succeeded", 1)
    assert (job["status"], job["attempts"], job["instance"]) == ("succeeded", 2, other), job
    by_kind = {o["kind"]: o for o in job["outputs"]}
    assert by_kind["text"]["text"] == f"instance={other} wedged=0"  # FleetWedge's own word
    assert by_kind["images"]["filename"] == "wedge_00001_.png"

    events = sse_events(server, job_id)
    stalled = [data for kind, data in events if kind == "stalled"]
    assert len(stalled) == 2
    assert (stalled[0]["action"], stalled[0]["instance"]) == ("interrupt", wedged)
    assert (stalled[0]["node"], stalled[0]["node_type"]) == ("4", "FleetWedge")
    assert stalled[0]["silent_s"] >= STALL_S
    assert stalled[1] == {"instance": wedged, "action": "restarted"}
    [error] = [data["error"] for kind, data in events if kind == "status" and data.get("retry")]
    assert (error["code"], error["retryable"], error["action"]) == (
        "instance_stalled",
        True,
        "restarted",
    )
    assert re.fullmatch(
        rf"instance {wedged}: no progress for [0-9.]+s at node 4 \(FleetWedge\); it ignored an "
        rf"interrupt for {GRACE_S:g}s, so the instance was restarted",
        error["message"],
    ), error["message"]

    # The wedged instance comes back: a new process, warmed up again, taking jobs.
    def back() -> dict[str, Any] | None:
        now = instances(server)[wedged]
        return now if now["state"] == "ready" and now["pid"] != before["pid"] else None

    after = wait_for(f"instance {wedged} ready again", back, 120)
    assert after["restarts"] == before["restarts"] + 1
    log = supervisor_log(server)
    assert f"instance {wedged}: busy -> restarting (watchdog: job {job_id} made no progress" in log
    assert f"instance {wedged}: restarting -> starting (restart {after['restarts']})" in log
    [entry] = warm_ups(after["port"]).values()
    assert entry["status"]["status_str"] == "success"
    ids = [server.submit(sleep_graph(1.0, seed + 10 + n)).json()["id"] for n in range(2)]
    jobs = server.wait_all(ids, 60)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["instance"] for j in jobs} == {0, 1}
