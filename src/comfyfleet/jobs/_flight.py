"""A job a lane holds, from its claim until its attempt ends: where it is and what ComfyUI
said of it so far."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.jobs._model import Job


@dataclass
class InFlight:
    job: Job
    prompt_id: str
    started_at: float | None = None
    """Wall-clock time ComfyUI began executing it (for the running timeout); None before."""
    ui_outputs: dict[str, Any] = field(default_factory=dict)
    """What `executed` messages reported, by node: the outputs, without asking /history."""
    gap: bool = False
    """The WebSocket dropped while this prompt was in flight: messages may be missing."""
    phase: str = "claimed"
    """claimed (being submitted), preparing (its models downloading), submitted (in ComfyUI)."""
    since: float = field(default_factory=time.monotonic)
    """When it entered its phase: the watchdog's measure of a claim nothing works on."""
    task: asyncio.Task[None] | None = None
    """The task preparing it, while it is preparing."""

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def enter(self, phase: str) -> None:
        self.phase, self.since = phase, time.monotonic()
