"""A job a lane holds, from its claim until its attempt ends: where it is and what ComfyUI
said of it so far."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.comfy import ComfyMessage
from comfyfleet.jobs._failures import JobError
from comfyfleet.jobs._limits import JobLimits, timeout_error
from comfyfleet.jobs._model import Job


@dataclass(frozen=True)
class Stall:
    """What the stall watchdog found: silent this long at this node, interrupted at `at`."""

    silent_s: float
    node: str | None
    node_type: str | None
    at: float
    """Monotonic time of the interrupt."""

    def error(self, instance: int, action: str, grace_s: float = 0.0) -> JobError:
        """The attempt's error: `action` is what ended it (interrupted, restarted, abandoned)."""
        where = f"node {self.node} ({self.node_type})" if self.node else "its start"
        message = f"instance {instance}: no progress for {self.silent_s:.1f}s at {where}"
        if action == "interrupted":
            message += "; interrupted"
        else:
            message += f"; it ignored an interrupt for {grace_s:g}s"
            message += ", so the instance was restarted" if action == "restarted" else ""
        details: dict[str, Any] = {
            "instance": instance,
            "node_id": self.node,
            "node_type": self.node_type,
            "stalled_s": round(self.silent_s, 1),
            "action": action,
        }
        return JobError("instance_stalled", message, retryable=True, details=details)


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
    heard_at: float | None = None
    """Monotonic time of the last message about it: the stall watchdog's clock."""
    longest_gap: float = 0.0
    """The longest silence between two of its messages so far (its own progress cadence)."""
    node: str | None = None
    """The node ComfyUI last said it executes."""
    stall: Stall | None = None
    """Set when the stall watchdog interrupted it."""

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

    def heard(self, message: ComfyMessage, now: float | None = None) -> None:
        """Any message about the prompt is a sign of life (progress, a node change, outputs)."""
        now = time.monotonic() if now is None else now
        if self.heard_at is not None:
            self.longest_gap = max(self.longest_gap, now - self.heard_at)
        self.heard_at = now
        if message.type == "executing" and message.data.get("node") is not None:
            self.node = str(message.data["node"])

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
