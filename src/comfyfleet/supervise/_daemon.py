"""Detaching a supervisor: `comfyfleet up --detach`.

The CLI forks after it has imported everything and resolved the settings, so the background
supervisor starts at once (no second interpreter to boot) with exactly the settings the user gave.
The child leaves the terminal's session, sends its output to `logs/supervisor.out`, runs the fleet,
and exits when it is stopped. Nothing records its pid: the CLI finds it through the control socket.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from pathlib import Path

from comfyfleet.errors import ComfyfleetError
from comfyfleet.supervise._runner import run_fleet
from comfyfleet.supervise._settings import FleetSettings
from comfyfleet.supervise._warmup import Warmup
from comfyfleet.workspace import Workspace


def _redirect_stdio(out_file: Path) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)


def spawn_daemon(
    fleet: FleetSettings, ws: Workspace, out_file: Path, warmup: Warmup | None = None
) -> int:
    """Fork a detached supervisor of workspace `ws`; returns its pid (in the parent only).

    Call it before starting any thread: a fork copies only the calling thread.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:  # pragma: no cover - runs in the forked child; the integration tests observe it
        os.setsid()
        _redirect_stdio(out_file)
        asyncio.run(run_fleet(fleet, ws, warmup=warmup))
        code = 0
    except ComfyfleetError as exc:  # pragma: no cover
        print(f"error: {exc}", file=sys.stderr)
    except BaseException:  # pragma: no cover
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
