"""Time from `comfyfleet up` to every instance ready, against ComfyUI's own start; and time
from a kill -9 of an instance to ready again, with the fork server against plain starts.

Both are measured in the same run, interleaved, on the same installed workspace:
  direct:  `python main.py <the same flags>` until GET /system_stats answers (1 process)
  fleet:   `comfyfleet up --detach -n N` until it returns with every instance ready
Goal: the fleet's start is within 1 s of ComfyUI's own (for N=1; N>1 shares the CPU).

Recovery (`--recovery`, or `--only-recovery`): two fleets of one instance each run side by side
in workspaces that share the install, one with the fork server (the default; the bench waits for
it to be ready) and one with `fork_server: false`; each round kills the instance of one, then of
the other, and times the kill to ready: GET /system_stats answers on the new process and the
supervisor says `ready`; and the CPU seconds the new process used until then.
Goal: back within 1.5 s with the fork server (ComfyUI's own start: 6-11 s here).

Usage: python bench/startup.py [--workspace WS] [--rounds 3] [--instances 1]
                               [--recovery | --only-recovery]
(default workspace: the test suite's cached install, built on first use)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import free_port_block, installed_workspace, workspace_sharing

from comfyfleet.config import load_settings
from comfyfleet.gpus import detect_platform, plan_instances
from comfyfleet.supervise import ControlClient
from comfyfleet.supervise._command import comfy_argv, instance_specs
from comfyfleet.workspace import Workspace


def direct_start(ws: Path) -> float:
    settings = load_settings({"workspace": ws})
    workspace = Workspace.from_settings(settings)
    plan = plan_instances(detect_platform(), instances=1)[0]
    workspace.prepare()
    instance_specs(workspace, settings.fleet, [plan])  # creates the instance folders ComfyUI needs
    port = free_port_block(1)
    argv = comfy_argv(workspace, settings.fleet, plan, port)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=workspace.comfyui_dir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=2):
                    return time.monotonic() - started
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("ComfyUI exited during the direct start") from None
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(30)


def fleet_start(ws: Path, instances: int) -> tuple[float, float]:
    """Wall time of `comfyfleet up --detach`, and the part of it that was ComfyUI's own start
    (spawn to first answer of the slowest instance, as the supervisor recorded it)."""
    base = free_port_block(instances)
    cf = [sys.executable, "-m", "comfyfleet"]
    up = [*cf, "up", "-w", str(ws), "--detach", "-n", str(instances), "--base-port", str(base)]
    started = time.monotonic()
    subprocess.run(up, check=True, capture_output=True)
    elapsed = time.monotonic() - started
    listing = subprocess.run(
        [*cf, "status", "-w", str(ws), "--json"], check=True, capture_output=True, text=True
    ).stdout
    comfy = max(i["ready_since"] - i["started_at"] for i in json.loads(listing)["instances"])
    subprocess.run([*cf, "down", "-w", str(ws)], check=True, capture_output=True)
    return elapsed, comfy


CF = [sys.executable, "-m", "comfyfleet"]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=2):
            return True
    except OSError:
        return False


def _instance(control: ControlClient) -> dict[str, object]:
    found: dict[str, object] = control.request("status")["instances"][0]
    return found


def kill_to_ready(ws: Path) -> tuple[float, float]:
    """kill -9 of instance 0, to its successor answering and the supervisor calling it ready;
    and the CPU seconds the successor spent until then (its start's own work, whatever else
    the machine's cores were doing)."""
    control = ControlClient(ws / "state" / "supervisor.sock")
    old = _instance(control)
    port = int(str(old["port"]))
    killed = time.time()
    os.kill(int(str(old["pid"])), signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = _instance(control)
        if now["pid"] not in (None, old["pid"]) and now["state"] == "ready" and _answers(port):
            answered = time.time()
            cpu = psutil.Process(int(str(now["pid"]))).cpu_times()
            return max(answered, float(str(now["ready_since"]))) - killed, cpu.user + cpu.system
        time.sleep(0.01)
    raise SystemExit(f"instance of {ws} not ready again after 120 s")


def recovery(installed: Path, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as scratch:
        fleets = {}
        for name, fork in (("fork server", True), ("plain start", False)):
            ws = workspace_sharing(installed, Path(scratch) / name.replace(" ", "-"))
            # Each kill is a first crash (restarted at once), not a repeat that backs off.
            fleet = {"fork_server": fork, "probe_interval_s": 0.2, "backoff_reset_s": 1.0}
            (ws / "comfyfleet.yaml").write_text(yaml.safe_dump({"fleet": fleet}))
            base = str(free_port_block(1))
            up = [*CF, "up", "-w", str(ws), "--detach", "-n", "1", "--base-port", base]
            subprocess.run(up, check=True, capture_output=True)
            fleets[name] = ws
        server_log = fleets["fork server"] / "logs" / "fork-server.log"
        deadline = time.monotonic() + 300  # it starts once the fleet is ready, then preloads
        while not (server_log.exists() and "fork server: ready" in server_log.read_text()):
            if time.monotonic() > deadline:
                raise SystemExit(f"the fork server did not get ready: {server_log}")
            time.sleep(0.2)
        times: dict[str, list[float]] = {name: [] for name in fleets}
        cpus: dict[str, list[float]] = {name: [] for name in fleets}
        try:
            for n in range(rounds):
                for name, ws in fleets.items():
                    time.sleep(2.0)  # let the last start's leftovers (gc, caches) settle
                    wall, cpu = kill_to_ready(ws)
                    times[name].append(wall)
                    cpus[name].append(cpu)
                line = "  ".join(
                    f"{name} {times[name][-1]:.2f}s (CPU {cpus[name][-1]:.2f}s)" for name in fleets
                )
                print(f"recovery round {n + 1}: kill -9 to ready: {line}", flush=True)
        finally:
            for ws in fleets.values():
                subprocess.run([*CF, "down", "-w", str(ws)], capture_output=True)
        fork, plain = (statistics.median(t) for t in times.values())
        fork_cpu, plain_cpu = (statistics.median(c) for c in cpus.values())
        print(f"median kill -9 to ready: fork server {fork:.2f}s, plain start {plain:.2f}s")
        print(f"median CPU time of the start: fork server {fork_cpu:.2f}s, plain {plain_cpu:.2f}s")
        print(f"ratio fork/plain: {fork / plain:.2f} (goal: fork server within 1.5 s)")
        print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--recovery", action="store_true", help="also time kill -9 to ready")
    parser.add_argument("--only-recovery", action="store_true", help="only time kill -9 to ready")
    args = parser.parse_args()
    ws = args.workspace or installed_workspace()
    if args.recovery or args.only_recovery:
        recovery(ws, args.rounds)
    if args.only_recovery:
        return
    direct, fleet, inner = [], [], []
    for n in range(args.rounds):
        direct.append(direct_start(ws))
        total, comfy = fleet_start(ws, args.instances)
        fleet.append(total)
        inner.append(total - comfy)
        print(
            f"round {n + 1}: direct {direct[-1]:.2f}s  fleet {total:.2f}s "
            f"(ComfyUI inside it {comfy:.2f}s, comfyfleet's own {total - comfy:.2f}s)",
            flush=True,
        )
    d, f, own = statistics.median(direct), statistics.median(fleet), statistics.median(inner)
    print(f"median: ComfyUI alone {d:.2f}s, comfyfleet up ({args.instances} instances) {f:.2f}s")
    print(f"ratio fleet/direct: {f / d:.2f}, added: {f - d:+.2f}s (goal: within 1 s)")
    print(f"comfyfleet's own time around ComfyUI's start (median): {own:.2f}s")


if __name__ == "__main__":
    main()
