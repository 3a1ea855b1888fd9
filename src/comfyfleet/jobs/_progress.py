"""How far a running job has got, in one vocabulary wherever it is read.

ComfyUI reports the running node's steps as `value` of `max`. The lane turns that into a
:class:`JobProgress`: the `node`, its `step` of `steps`, and the `fraction` done. Everything that
reads progress (the gateway's live streams, the Comfy API v2 and ComfyUI facades, the views)
reads these attributes, whichever of its two JSON forms it came from:

    stored   {"node", "value", "max", "fraction"}   a job's `progress`, a `progress` event's data
    client   {"node", "step", "steps", "value"}     the SSE/WebSocket `progress` event (value 0..1)

Both forms are public (the job's API view and webhooks show the stored one), so they stay as
they are; this module is the one place that reads and writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast


@dataclass(frozen=True)
class JobProgress:
    """The running node's progress: `step` of `steps`, `fraction` (0..1) done."""

    node: str | None
    step: int
    steps: int
    fraction: float

    @classmethod
    def of(cls, node: Any, step: Any, steps: Any) -> JobProgress:
        """From ComfyUI's numbers (`steps` 0 counts as 1: a node with no steps is one step).
        Numbers that are not numbers raise ValueError or TypeError, as `int()` does: a message
        that makes no sense ends its attempt rather than showing made-up progress."""
        step, steps = int(step), int(steps) or 1
        return cls(_node(node), step, steps, round(step / steps, 4))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobProgress:
        """The stored form. Numbers it lacks read as 0, a missing fraction from the steps."""
        step, steps, fraction = data.get("value"), data.get("max"), data.get("fraction")
        if type(step) is int and type(steps) is int and type(fraction) is float:
            return cls(_node(data.get("node")), step, steps, fraction)  # as the lane writes it
        step, steps = _count(step), _count(steps)
        return cls(_node(data.get("node")), step, steps, _fraction(fraction, step, steps))

    @classmethod
    def from_client(cls, data: Mapping[str, Any]) -> JobProgress:
        """The client form (what `to_client` wrote)."""
        step, steps = _count(data.get("step")), _count(data.get("steps"))
        return cls(_node(data.get("node")), step, steps, _fraction(data.get("value"), step, steps))

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "value": self.step, "max": self.steps, "fraction": self.fraction}

    def to_client(self) -> dict[str, Any]:
        value = min(1.0, max(0.0, float(self.fraction)))
        return {"node": self.node, "step": self.step, "steps": self.steps, "value": value}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> int:
    return int(value) if _number(value) else 0


def _fraction(value: Any, step: int, steps: int) -> float:
    """`value` where it is a number (as stored: an int stays an int), else step / steps."""
    if _number(value):
        return cast(float, value)
    return step / steps if steps else 0.0


def _node(node: Any) -> str | None:
    return None if node is None else str(node)
