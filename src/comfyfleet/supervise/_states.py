"""The instance state model: which states exist and which moves between them are legal.

Modelled on Supervisor's process states, plus READY/BUSY (answering, idle or working) in place of
RUNNING, since a ComfyUI process that runs but does not answer HTTP is not usable:

    STOPPED -> STARTING -> READY <-> BUSY
    STARTING -> WARMING -> READY             (answering; a warm-up workflow runs first, if any)
    STARTING/WARMING -> BACKOFF -> STARTING  (failed start: exited early, hook failed, timed
                                              out, warm-up failed)
    STARTING/WARMING -> FATAL                (more failed starts in a row than allowed)
    READY/BUSY -> EXITED -> BACKOFF          (crashed or stopped answering)
    READY/BUSY -> RESTARTING -> STARTING     (a restart asked for: a watchdog, an operator)
    any -> STOPPING -> STOPPED               (asked to stop)

Attached servers (`_attached`), which comfyfleet watches but never runs, use READY/BUSY/STOPPED
and three states of their own: PROBING, UNREACHABLE and NOT_COMFYUI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from comfyfleet.errors import SupervisorError


class State(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    WARMING = "warming"
    READY = "ready"
    BUSY = "busy"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    RESTARTING = "restarting"
    FATAL = "fatal"
    PROBING = "probing"
    UNREACHABLE = "unreachable"
    NOT_COMFYUI = "not_comfyui"


_ALLOWED: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset(
        {State.WARMING, State.READY, State.BUSY, State.BACKOFF, State.FATAL, State.STOPPING}
    ),
    State.WARMING: frozenset({State.READY, State.BUSY, State.BACKOFF, State.FATAL, State.STOPPING}),
    State.READY: frozenset({State.BUSY, State.EXITED, State.RESTARTING, State.STOPPING}),
    State.BUSY: frozenset({State.READY, State.EXITED, State.RESTARTING, State.STOPPING}),
    State.EXITED: frozenset({State.BACKOFF, State.STOPPING}),
    State.RESTARTING: frozenset({State.STARTING, State.STOPPING}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPING}),
    State.FATAL: frozenset({State.STARTING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.PROBING: frozenset(),
    State.UNREACHABLE: frozenset(),
    State.NOT_COMFYUI: frozenset(),
}
"""Supervised instances; they never enter the attached servers' own states."""

SERVING = frozenset({State.READY, State.BUSY})
"""States in which an instance answers and can take work."""


class InvalidTransition(SupervisorError):
    """A move the state model does not allow: always a bug in the supervisor, never user error."""


def check_transition(old: State, new: State) -> None:
    if new not in _ALLOWED[old]:
        raise InvalidTransition(f"instance cannot go from {old} to {new}")


@dataclass(frozen=True)
class InstanceEvent:
    """One transition. Logged, kept for `status`, and streamed to later components."""

    instance: int
    old: State
    new: State
    reason: str = ""
    pid: int | None = None
    port: int | None = None
    at: float = field(default_factory=time.time)
    url: str | None = None
    """Set for attached servers: where they answer (supervised ones are on the fleet's host)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "instance": self.instance,
            "old": str(self.old),
            "new": str(self.new),
            "reason": self.reason,
            "pid": self.pid,
            "port": self.port,
            "at": self.at,
            "url": self.url,
        }

    def describe(self) -> str:
        text = f"instance {self.instance}: {self.old} -> {self.new}"
        return f"{text} ({self.reason})" if self.reason else text
