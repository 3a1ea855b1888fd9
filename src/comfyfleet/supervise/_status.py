"""What `status` reports about an instance, as plain data that crosses the control socket."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psutil

from comfyfleet.supervise._states import State


def process_tree_rss(pid: int | None) -> int | None:
    """Resident memory of a process and all its children, in bytes; None when it is gone."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


@dataclass(frozen=True)
class InstanceStatus:
    index: int
    state: State
    pid: int | None
    port: int
    device: str
    started_at: float | None
    ready_since: float | None
    restarts: int
    rss_bytes: int | None
    version: str | None
    reason: str
    url: str | None = None
    attached: bool = False
    """A server comfyfleet did not start: watched by probes, never started or restarted."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceStatus:
        return cls(**{**data, "state": State(data["state"])})
