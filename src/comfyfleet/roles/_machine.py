"""What an agent says of its machine in each report: CPU, memory, the disks it writes, its GPUs.

Plain numbers (bytes, percents), read with psutil and NVML in well under a millisecond; the
dashboard turns them into bars and warnings (a disk nearly full). CPU use is measured between
two readings, so the first one of a process says 0.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from comfyfleet.gpus import GpuMeter


class MachineMeter:
    """Reads the machine; `disks` names the folders whose file systems matter (models,
    outputs, workspace), so a disk filling up is seen whichever folder is on it."""

    def __init__(self, disks: Mapping[str, Path], gpus: GpuMeter | None = None) -> None:
        self.disks = dict(disks)
        self.gpus = gpus or GpuMeter()

    def read(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        try:
            load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
        except OSError:  # not on every platform
            load = None
        return {
            "cpu": {
                "percent": psutil.cpu_percent(interval=None),
                "count": psutil.cpu_count() or 0,
                "load": load,
            },
            "memory": {
                "total": memory.total,
                "available": memory.available,
                "used": memory.total - memory.available,
                "percent": memory.percent,
            },
            "disks": _disks(self.disks),
            "gpus": [gpu.to_dict() for gpu in self.gpus.read()],
        }

    def close(self) -> None:
        self.gpus.close()


def _disks(named: Mapping[str, Path]) -> list[dict[str, Any]]:
    """One entry per file system (several folders on one disk are listed together)."""
    found: dict[int, dict[str, Any]] = {}
    for name, path in named.items():
        try:
            device = path.stat().st_dev
            usage = shutil.disk_usage(path)
        except OSError:
            continue  # not created yet: nothing to show
        entry = found.setdefault(
            device,
            {
                "folders": [],
                "total": usage.total,
                "used": usage.used,
                "free": usage.free,
                "percent": round(100 * usage.used / usage.total, 1) if usage.total else 0.0,
            },
        )
        entry["folders"].append(name)
    return list(found.values())
