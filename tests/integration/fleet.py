"""Driving the real CLI as a user does, for the integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml


def cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `comfyfleet ARGS` in a subprocess (wide terminal, no colour)."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "comfyfleet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"comfyfleet {args} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def write_config(ws: Path, **fleet: Any) -> None:
    settings = {
        "fleet": {
            "probe_interval_s": 0.2,
            "backoff_initial_s": 0.5,
            "backoff_max_s": 2.0,
            "startup_timeout_s": 120,
            "stop_grace_s": 10,
            **fleet,
        }
    }
    (ws / "comfyfleet.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")


def status(ws: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli("status", "-w", ws, "--json").stdout)
    return data


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def comfyui_processes(ws: Path) -> list[psutil.Process]:
    """Every ComfyUI process started for this workspace (found by its command line)."""
    found = []
    needle = str(ws / "extra_model_paths.yaml")
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if needle in cmdline:
            found.append(proc)
    return found
