"""Time from `comfyfleet up` to every instance ready, against ComfyUI's own start.

Both are measured in the same run, interleaved, on the same installed workspace:
  direct:  `python main.py <the same flags>` until GET /system_stats answers (1 process)
  fleet:   `comfyfleet up --detach -n N` until it returns with every instance ready
Goal: the fleet's start is within 1 s of ComfyUI's own (for N=1; N>1 shares the CPU).

Usage: python bench/startup.py [--workspace WS] [--rounds 3] [--instances 1]
(default workspace: the test suite's cached install, built on first use)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import free_port_block, installed_workspace

from comfyfleet.config import load_settings
from comfyfleet.gpus import detect_platform, plan_instances
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=1)
    args = parser.parse_args()
    ws = args.workspace or installed_workspace()
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
