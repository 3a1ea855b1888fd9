"""kill -9 of `comfyfleet serve` itself: the SQLite store keeps every job; a restart runs them."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.comfyui_env import workspace_sharing
from tests.integration.fleet import comfyui_processes
from tests.integration.serve import Server, serve_config, sleep_graph

pytestmark = pytest.mark.comfyui


def test_kill_9_of_serve_loses_nothing_and_delivers_nothing_twice(
    comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("crash"))
    serve_config(ws)
    first = Server(ws, instances=1).start()
    seed = time.time_ns() % 1_000_000_007
    running_id = first.submit(sleep_graph(30.0, seed)).json()["id"]
    deadline = time.monotonic() + 60
    while first.job(running_id)["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # inside ComfyUI now, sleeping
    queued = [first.submit(sleep_graph(0.05, seed + n)).json()["id"] for n in range(1, 31)]
    assert first.job(running_id)["status"] == "running"
    # One more job is claimed already: it waits inside ComfyUI's own queue (the second slot).
    claimed = {i for i in queued if first.job(i)["status"] == "running"}
    assert len(claimed) <= 1

    first.stop(signal.SIGKILL)
    first.http.close()
    deadline = time.monotonic() + 30
    while comfyui_processes(ws) and time.monotonic() < deadline:
        time.sleep(0.1)  # the instances die with their supervisor
    assert comfyui_processes(ws) == []

    second = Server(ws, instances=1, port=first.port).start()
    try:
        jobs = second.wait_all([running_id, *queued], 240)
    finally:
        second.close()
    by_id = {j["id"]: j for j in jobs}
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert by_id[running_id]["attempts"] == 2
    assert all(by_id[i]["attempts"] == (2 if i in claimed else 1) for i in queued)
    for job_id in [running_id, *queued]:  # one image each: nothing ran to completion twice
        assert len(list((ws / "output" / job_id).iterdir())) == 1
