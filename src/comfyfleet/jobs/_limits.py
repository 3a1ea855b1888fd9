"""How long a job may wait and run: defaults from the settings, overridden per job.

A job that waits longer than its queue timeout (in the store, or submitted to ComfyUI but not
started yet) or runs longer than its running timeout fails with code `timeout`, for good: a
retry would most likely time out again. The instance running it is interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfyfleet.jobs._options import JobOptions, Timeouts


@dataclass(frozen=True)
class JobLimits:
    queued_timeout_s: float | None = None
    running_timeout_s: float | None = None

    def for_job(self, options: JobOptions) -> tuple[float | None, float | None]:
        """(queued, running) timeouts of a job: its own `timeouts` option, else the defaults."""
        own = options.timeouts or Timeouts()
        queued = self.queued_timeout_s if own.queued_s is None else own.queued_s
        running = self.running_timeout_s if own.running_s is None else own.running_s
        return queued, running


def timeout_error(phase: str, limit_s: float) -> dict[str, Any]:
    return {
        "code": "timeout",
        "retryable": False,
        "phase": phase,
        "message": f"the job was {phase} for longer than its {phase} timeout of {limit_s:g}s",
    }
