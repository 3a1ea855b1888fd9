"""`serve` in front of a fleet that `up --detach` started: it follows that supervisor through
its control socket instead of refusing, runs jobs on its instances, sees an instance restart,
and leaves the fleet running when it stops."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.comfyui_env import free_port_block, workspace_sharing
from tests.integration.fleet import cli, status, wait_for
from tests.integration.serve import Server, model_free_graph, serve_config, sleep_graph

pytestmark = pytest.mark.comfyui


@pytest.fixture
def ws(comfyui_install: Path, tmp_path: Path) -> Iterator[Path]:
    workspace = workspace_sharing(comfyui_install, tmp_path / "ws")
    serve_config(workspace)
    yield workspace
    if (workspace / "state" / "supervisor.sock").exists():
        cli("down", "-w", workspace, check=False)


def test_serve_follows_a_detached_fleet_and_leaves_it_running(ws: Path) -> None:
    base = free_port_block(1)
    cli("up", "-w", ws, "--instances", "1", "--base-port", str(base), "--detach")
    (before,) = status(ws)["instances"]
    server = Server(ws, instances=1, base_port=base)
    try:
        server.start(timeout=60)
        (listed,) = server.http.get("/v1/instances").json()["instances"]
        assert listed["state"] in ("ready", "busy")
        ids = [server.submit(model_free_graph(n, "follow")).json()["id"] for n in range(3)]
        jobs = server.wait_all(ids, 60)
        assert {j["status"] for j in jobs} == {"succeeded"}

        # The detached supervisor restarts its instance under a running job: it runs again.
        slow = server.submit(sleep_graph(3.0, 7)).json()["id"]
        wait_for(lambda: server.job(slow)["status"] == "running", 30, "the slow job to run")
        time.sleep(0.5)
        os.kill(before["pid"], signal.SIGKILL)
        (done,) = server.wait_all([slow], 120)
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
    finally:
        server.close()
    assert "following the fleet" in (ws / "serve.out").read_text()
    (after,) = status(ws)["instances"]  # serve stopped; the fleet did not
    assert after["state"] == "ready" and after["pid"] != before["pid"]
