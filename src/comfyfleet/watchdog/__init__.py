"""Watchdogs: stalled jobs, instances whose memory grew, idle memory, warm-ups after each start.

The stall watchdog itself runs in the dispatcher (it follows every running job: see
`comfyfleet.jobs`), the warm-up in the supervisor (it gates READY: see `comfyfleet.supervise`);
this package holds their settings, turns the warm-up settings into graphs, and watches the
idle instances (:class:`IdleWatch`).
"""

from __future__ import annotations

from comfyfleet.watchdog._idle import Fleet, IdleWatch
from comfyfleet.watchdog._memory import MemoryReader, MemoryUse, NvmlVram, memory_reader
from comfyfleet.watchdog._settings import WarmupSettings, WatchdogSettings
from comfyfleet.watchdog._warmups import build_warmup

__all__ = [
    "Fleet",
    "IdleWatch",
    "MemoryReader",
    "MemoryUse",
    "NvmlVram",
    "WarmupSettings",
    "WatchdogSettings",
    "build_warmup",
    "memory_reader",
]
