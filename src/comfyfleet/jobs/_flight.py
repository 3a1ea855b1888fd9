"""A job a lane holds, from its claim until its attempt ends: where it is and what ComfyUI
said of it so far."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.jobs._limits import JobLimits, timeout_error
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
    sent_at: float | None = None
    """Monotonic time its submit began: its wait in ComfyUI's queue is counted from there."""
    finished: bool = False
    """ComfyUI said it ended (a message or its history), whether or not its start was heard."""

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def waited_s(self) -> float | None:
        """How long it waited in ComfyUI's queue, when it starts now (None: never sent)."""
        return None if self.sent_at is None else time.monotonic() - self.sent_at

    def last_phase(self) -> tuple[str, float] | None:
        """The phase its attempt ends in now, and how long it has been in it: running since
        ComfyUI started it (since it was sent, when ComfyUI ended it unheard of starting:
        a WebSocket gap); waiting, when it never left ComfyUI's queue. None: never sent."""
        if self.started_at is not None:
            return "running", max(0.0, time.time() - self.started_at)
        if self.sent_at is None:
            return None
        return ("running" if self.finished else "waiting"), time.monotonic() - self.sent_at

    def enter(self, phase: str) -> None:
        self.phase, self.since = phase, time.monotonic()

    def stranded(self, claim_grace_s: float, now: float) -> bool:
        """Nothing works on it: claimed but never submitted (the task submitting it was
        cancelled or died), or preparing with no live task. Its lease would otherwise be
        renewed for ever."""
        if self.phase == "claimed":
            return now - self.since > claim_grace_s
        return self.phase == "preparing" and (self.task is None or self.task.done())

    def timed_out(self, limits: JobLimits, now: float) -> dict[str, Any] | None:
        """The timeout error when it has waited (queued in ComfyUI) or run longer than its
        job allows, else None."""
        queued_s, running_s = limits.for_job(self.job.options)
        if self.started_at is not None:
            if running_s is not None and now - self.started_at > running_s:
                return timeout_error("running", running_s)
        elif queued_s is not None and now - self.job.queued_at > queued_s:
            return timeout_error("queued", queued_s)
        return None
