"""Real ComfyUI instances under the supervisor, driven through the CLI like a user would."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfyfleet.comfy import ComfyClient, sample_graph
from tests.comfyui_env import VERSION, free_port_block, workspace_sharing
from tests.integration.fleet import cli, comfyui_processes, status, wait_for, write_config

pytestmark = pytest.mark.comfyui


@pytest.fixture
def ws(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("ws"))
    yield workspace
    if (workspace / "state" / "supervisor.sock").exists():
        cli("down", "-w", workspace, check=False)


def _run_graphs(port: int, seed: int) -> list[str]:
    """A model-free image graph and a custom-node graph on one instance; the file names."""

    async def main() -> list[str]:
        async with ComfyClient(f"http://127.0.0.1:{port}") as client:
            first = await client.wait(
                await client.submit(sample_graph(prefix=f"it/p{port}", seed=seed)), timeout=60
            )
            sleep = {"1": {"class_type": "FleetSleep", "inputs": {"seconds": 0.1, "seed": seed}}}
            second = await client.wait(await client.submit(sleep), timeout=60)
        assert second.outputs["1"]["text"] == ["slept 0.1s"]
        return [f.filename for f in first.files()]

    return asyncio.run(main())


def test_two_instances_work_survive_a_kill_and_leave_nothing_behind(ws: Path) -> None:
    base = free_port_block(2)
    write_config(ws)
    up = cli("up", "-w", ws, "--instances", "2", "--base-port", str(base), "--detach")
    assert "2 instances ready" in up.stdout
    before = status(ws)["instances"]
    assert [(i["state"], i["port"], i["device"]) for i in before] == [
        ("ready", base, "cpu"),
        ("ready", base + 1, "cpu"),
    ]
    assert all(i["version"] == VERSION and i["rss_bytes"] > 100 << 20 for i in before)
    for n, instance in enumerate(before):
        files = _run_graphs(instance["port"], seed=n + int(time.time()))
        assert (ws / "output" / "it" / files[0]).is_file()
    # Killed once its probes show it idle again (on a loaded machine the last probe may still
    # say busy), so the events below name the one state it was killed in.
    wait_for(lambda: status(ws)["instances"][0]["state"] == "ready", 60, "instance 0 idle")
    os.kill(before[0]["pid"], signal.SIGKILL)

    def back_ready() -> bool:
        now = status(ws)["instances"][0]
        return now["state"] == "ready" and now["pid"] != before[0]["pid"]

    wait_for(back_ready, 120, "instance 0 to come back")
    after = status(ws)["instances"]
    assert after[0]["restarts"] == 1
    assert (after[1]["pid"], after[1]["restarts"], after[1]["state"]) == (
        before[1]["pid"],
        0,
        "ready",
    )
    # The way back, from the events: a restart through the fork server is over too soon for
    # `status` polls to catch it in between.
    events = cli("logs", "-w", ws).stdout
    assert "instance 0: ready -> exited (exited with signal SIGKILL)" in events
    assert "instance 0: exited -> backoff" in events
    assert "instance 0: backoff -> starting (restart 1)" in events
    _run_graphs(after[0]["port"], seed=99 + int(time.time()))

    pids = [i["pid"] for i in after]
    down = cli("down", "-w", ws)
    assert "stopped 2 instances" in down.stdout
    assert not any(p.is_running() for p in map(_process_or_none, pids) if p)
    assert comfyui_processes(ws) == []
    assert not (ws / "state" / "supervisor.sock").exists()
    assert "installed, not running" in cli("status", "-w", ws).stdout


def _process_or_none(pid: int) -> object:
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def test_an_instance_that_always_fails_to_start_ends_fatal(ws: Path) -> None:
    write_config(ws, extra_args=["--no-such-comfyui-flag"], start_retries=1)
    up = cli("up", "-w", ws, "--base-port", str(free_port_block(1)), "--detach", check=False)
    assert up.returncode == 1
    assert (
        "instance 0 could not start: exited with exit code 2 before it was ready; gave up "
        "after 2 failed starts in a row" in up.stdout
    )
    assert "unrecognized arguments: --no-such-comfyui-flag" in up.stdout  # ComfyUI's last lines
    events = cli("logs", "-w", ws).stdout
    assert "instance 0: starting -> fatal" in events
    assert comfyui_processes(ws) == []
    assert "installed, not running" in cli("status", "-w", ws).stdout


def test_foreground_up_stops_everything_on_ctrl_c(ws: Path) -> None:
    hook = ws / "hook.sh"
    hook.write_text('#!/bin/sh\necho "$COMFYFLEET_INSTANCE $COMFYFLEET_PORT" >> "$0.ran"\n')
    hook.chmod(0o755)
    base = free_port_block(1)
    write_config(ws, pre_start_hook=str(hook))
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfyfleet", "up", "-w", str(ws), "--base-port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "every instance is ready" in line:
            break
    assert (ws / "hook.sh.ran").read_text() == f"0 {base}\n"
    assert len(comfyui_processes(ws)) == 1
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "all instances stopped" in rest
    assert comfyui_processes(ws) == []


def test_a_busy_port_is_skipped_and_said(ws: Path) -> None:
    base = free_port_block(3)
    write_config(ws)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base))
        squatter.listen()
        cli("up", "-w", ws, "--base-port", str(base), "--detach")
        instance = status(ws)["instances"][0]
    assert instance["port"] != base
    assert (
        f"port {base} is in use, took {instance['port']}" in cli("status", "-w", ws).stdout
        or f"took {instance['port']}" in cli("logs", "0", "-w", ws, "-n", "500").stdout
    )
    cli("down", "-w", ws)


def test_gpus_asked_for_on_a_machine_without_them(ws: Path) -> None:
    up = cli("up", "-w", ws, "--gpus", "0,1", check=False)
    assert up.returncode == 1
    assert "this machine has no GPU" in up.stderr
    assert comfyui_processes(ws) == []


def test_a_second_up_is_refused_while_one_runs(ws: Path) -> None:
    write_config(ws)
    cli("up", "-w", ws, "--base-port", str(free_port_block(1)), "--detach")
    again = cli("up", "-w", ws, "--detach", check=False)
    assert again.returncode == 1
    assert "a supervisor is already running" in again.stderr
    assert len(comfyui_processes(ws)) == 1
    cli("down", "-w", ws)


def test_up_on_a_missing_workspace_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    up = cli("up", "-w", missing, check=False)
    assert up.returncode == 1
    assert f"workspace {missing} does not exist" in up.stderr
    assert "comfyfleet install" in up.stderr
    assert not missing.exists()
