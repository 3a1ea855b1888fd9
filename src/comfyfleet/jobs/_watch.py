"""What a dispatcher tells of the work it does, for whoever counts it (metrics).

Only the lanes see these moments: a job claimed (how long it waited in the queue), each phase of
an attempt ending, the model files an instance had to load, an output store failing. Every call
is synchronous and cheap (a counter moves) and comes from the event loop; the default watch
does nothing. The phases of an attempt, in order:

    queued       from entering the queue (or re-entering it for a retry) to the claim
    downloading  making its model files ready: checked, and fetched where missing
    waiting      sent to ComfyUI, behind the prompt its instance is running
    running      from ComfyUI starting it to its end (done, failed, interrupted, cancelled)
    storing      writing its outputs to the output store
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

PHASES = ("queued", "downloading", "waiting", "running", "storing")


class JobWatch(Protocol):
    def phase(self, phase: str, seconds: float) -> None:
        """An attempt spent `seconds` in `phase` (one of PHASES)."""
        ...

    def model_loads(self, models: Collection[str]) -> None:
        """An instance ran a job with model files (`folder/name`) its previous job did not
        use: ComfyUI loaded them (as far as the lane can know: its cache may keep more)."""
        ...

    def storage_failed(self, error: Exception) -> None:
        """Writing a job's outputs to its output store failed with `error`."""
        ...


class NoWatch:
    """The watch of a dispatcher nobody counts for."""

    def phase(self, phase: str, seconds: float) -> None:
        pass

    def model_loads(self, models: Collection[str]) -> None:
        pass

    def storage_failed(self, error: Exception) -> None:
        pass
