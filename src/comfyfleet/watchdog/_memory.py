"""How much memory an instance holds: RSS of its process tree, and GPU memory through NVML.

RSS comes with every instance status (the supervisor measures the whole process tree). GPU
memory is read from NVML (`nvidia-ml-py`) by process: the sum of what the driver reports for the
instance's processes on every GPU. Where NVML cannot be loaded (no NVIDIA driver) or does not
see the instance's processes (a container whose process ids NVML reports from the host), the
GPU reading is None and only the RSS limit applies; that is said once in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from comfyfleet.supervise import InstanceStatus

log = logging.getLogger("comfyfleet.watchdog")

_MIB = 1 << 20


@dataclass(frozen=True)
class MemoryUse:
    rss_bytes: int | None
    vram_bytes: int | None

    def over(self, rss_mb: int | None, vram_mb: int | None) -> str | None:
        """What exceeds its limit, said with both numbers; None when nothing does."""
        found = []
        if rss_mb is not None and self.rss_bytes is not None and self.rss_bytes > rss_mb * _MIB:
            found.append(f"RSS {self.rss_bytes // _MIB} MiB > rss_mb {rss_mb}")
        vram = self.vram_bytes
        if vram_mb is not None and vram is not None and vram > vram_mb * _MIB:
            found.append(f"VRAM {vram // _MIB} MiB > vram_mb {vram_mb}")
        return ", ".join(found) or None


MemoryReader = Callable[[InstanceStatus], MemoryUse]


def process_tree(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


class NvmlVram:
    """GPU memory of a process tree by NVML; `nvml` stands in for the `pynvml` module."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._api: Any = nvml
        self._ready: bool | None = None
        self._unseen_said = False

    def _start(self) -> bool:
        if self._ready is None:
            try:
                if self._api is None:
                    import pynvml

                    self._api = pynvml
                self._api.nvmlInit()
                self._ready = True
            except Exception as exc:  # no library, no driver: no GPU readings
                log.warning("GPU memory cannot be read (NVML: %s): vram_mb is not checked", exc)
                self._ready = False
        return self._ready

    def __call__(self, pids: set[int]) -> int | None:
        """Bytes of GPU memory the processes `pids` use; None when unknown."""
        if not pids or not self._start():
            return None
        api, total, seen = self._api, 0, False
        try:
            for index in range(int(api.nvmlDeviceGetCount())):
                handle = api.nvmlDeviceGetHandleByIndex(index)
                for proc in api.nvmlDeviceGetComputeRunningProcesses(handle):
                    used = getattr(proc, "usedGpuMemory", None)
                    if proc.pid in pids and used is not None:
                        total, seen = total + int(used), True
        except Exception as exc:
            log.warning("reading GPU memory from NVML failed: %s", exc)
            return None
        if not seen and not self._unseen_said:
            self._unseen_said = True
            log.warning("NVML lists no GPU memory for processes %s: vram_mb is not checked", pids)
        return total if seen else None

    def close(self) -> None:
        if self._ready:
            try:
                self._api.nvmlShutdown()
            except Exception:
                pass
        self._ready = None


def memory_reader(vram: Callable[[set[int]], int | None] | None) -> MemoryReader:
    """Reads an instance's memory: RSS from its status, GPU memory from `vram` (if given)."""

    def read(status: InstanceStatus) -> MemoryUse:
        gpu = None if vram is None or status.pid is None else vram(process_tree(status.pid))
        return MemoryUse(status.rss_bytes, gpu)

    return read
