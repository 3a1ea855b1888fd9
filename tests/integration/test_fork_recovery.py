"""Fast recovery: instances forked from the fork server come back from a kill -9 through it,
and a killed fork server falls back to plain starts; `down` leaves no process of either kind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.comfyui_env import free_port_block, workspace_sharing
from tests.integration.fleet import cli, comfyui_processes, status, wait_for, write_config
from tests.integration.serve import Server, serve_config, sleep_graph
from tests.integration.test_fleet import _run_graphs

pytestmark = pytest.mark.comfyui

FORKED = "forked by the fork server"


@pytest.fixture
def ws(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("fork"))
    yield workspace
    if (workspace / "state" / "supervisor.sock").exists():
        cli("down", "-w", workspace, check=False)


def fork_servers(ws: Path) -> list[psutil.Process]:
    """The fork server processes of this workspace (found by their command line)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "--channel-fd" in cmdline and str(ws / "comfyui") in cmdline:
            found.append(proc)
    return found


def _instance_log(ws: Path) -> str:
    return (ws / "logs" / "instance-0.log").read_text(encoding="utf-8", errors="replace")


def _back_ready(ws: Path, old_pid: int) -> dict[str, object]:
    def ready() -> bool:
        now = status(ws)["instances"][0]
        return bool(now["state"] == "ready" and now["pid"] != old_pid)

    wait_for(ready, 120, "instance 0 to come back")
    found: dict[str, object] = status(ws)["instances"][0]
    return found


def _server_ready(log: Path) -> bool:
    return log.exists() and "fork server: ready" in log.read_text(encoding="utf-8")


def _up_with_fork_server(ws: Path) -> dict[str, object]:
    """`up` with one instance, first started plainly; once the fork server serves, a kill -9
    gets it an instance forked from the server. That instance's status."""
    cli("up", "-w", ws, "--instances", "1", "--base-port", str(free_port_block(1)), "--detach")
    first = status(ws)["instances"][0]
    assert "plain start: the fork server starts once every instance is ready" in (_instance_log(ws))
    server_log = ws / "logs" / "fork-server.log"
    wait_for(lambda: _server_ready(server_log), 180, "the fork server")
    os.kill(first["pid"], signal.SIGKILL)
    return _back_ready(ws, first["pid"])


def _down_leaves_nothing(ws: Path) -> None:
    cli("down", "-w", ws)
    assert comfyui_processes(ws) == []
    assert fork_servers(ws) == []


def test_a_killed_instance_comes_back_through_the_fork_server(ws: Path) -> None:
    write_config(ws)
    before = _up_with_fork_server(ws)
    assert _instance_log(ws).count(FORKED) == 1
    (server,) = fork_servers(ws)
    child = psutil.Process(int(str(before["pid"])))
    assert child.ppid() == server.pid
    assert os.getpgid(child.pid) == child.pid  # its own process group, as a plain start
    assert str(ws / "extra_model_paths.yaml") in child.cmdline()  # ps shows the instance

    os.kill(int(str(before["pid"])), signal.SIGKILL)
    after = _back_ready(ws, int(str(before["pid"])))
    assert after["restarts"] == 2
    assert _instance_log(ws).count(FORKED) == 2
    assert _instance_log(ws).count("plain start") == 1  # the first
    events = cli("logs", "-w", ws).stdout
    assert "instance 0: exited -> backoff (exited with signal SIGKILL; restarting in 0s)" in events
    files = _run_graphs(int(str(after["port"])), seed=time.time_ns() % 1_000_000)
    assert (ws / "output" / "it" / files[0]).is_file()
    _down_leaves_nothing(ws)


def test_a_killed_fork_server_falls_back_to_plain_starts(ws: Path) -> None:
    write_config(ws)
    before = _up_with_fork_server(ws)
    (server,) = fork_servers(ws)

    server.kill()  # its instances die with it (PDEATHSIG): the supervisor starts them again
    after = _back_ready(ws, int(str(before["pid"])))
    log = _instance_log(ws)
    assert "plain start: fork server it exited; starting a new one" in log
    assert psutil.Process(int(str(after["pid"]))).ppid() != server.pid
    files = _run_graphs(int(str(after["port"])), seed=time.time_ns() % 1_000_000)
    assert (ws / "output" / "it" / files[0]).is_file()
    wait_for(lambda: len(fork_servers(ws)) == 1, 120, "a new fork server")
    _down_leaves_nothing(ws)


def test_with_the_fork_server_off_every_start_is_plain(ws: Path) -> None:
    write_config(ws, fork_server=False)
    cli("up", "-w", ws, "--instances", "1", "--base-port", str(free_port_block(1)), "--detach")
    assert fork_servers(ws) == []
    assert FORKED not in _instance_log(ws)
    _down_leaves_nothing(ws)


def test_under_serve_a_job_whose_instance_is_killed_is_retried_on_its_forked_successor(
    ws: Path,
) -> None:
    serve_config(ws)
    server = Server(ws, instances=1).start()
    server_log = ws / "logs" / "fork-server.log"
    wait_for(lambda: _server_ready(server_log), 180, "the fork server")
    try:
        seed = time.time_ns() % 1_000_000_007
        job_id = server.submit(sleep_graph(5.0, seed)).json()["id"]
        wait_for(lambda: server.job(job_id)["status"] == "running", 60, "the job to run")
        time.sleep(1.0)  # inside ComfyUI now, sleeping
        (instance,) = server.http.get("/v1/instances").json()["instances"]
        os.kill(instance["pid"], signal.SIGKILL)
        (job,) = server.wait_all([job_id], 120)
        assert (job["status"], job["attempts"]) == ("succeeded", 2)
        assert _instance_log(ws).count(FORKED) == 1
    finally:
        server.close()
    assert comfyui_processes(ws) == []
    assert fork_servers(ws) == []
