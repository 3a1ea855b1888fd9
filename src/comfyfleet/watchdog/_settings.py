"""The `watchdog` section of the settings: stalled jobs, memory growth, idle memory, warm-ups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WarmupSettings(_Frozen):
    """A warm-up workflow: an API-format workflow file, or a template and its parameters."""

    workflow: Path | None = Field(None, description="an API-format workflow file (JSON)")
    template: str | None = Field(None, description="a template's name (see `templates`)")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the template's parameters (only with `template`)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> WarmupSettings:
        if (self.workflow is None) == (self.template is None):
            raise ValueError("a warm-up names either 'workflow' (a file) or 'template', not both")
        if self.params and self.template is None:
            raise ValueError("warm-up 'params' go with a 'template', not with a workflow file")
        return self


class WatchdogSettings(_Frozen):
    """What the watchdogs look for and when they act (see the README's "Watchdogs")."""

    stall_s: float | None = Field(
        300.0,
        gt=0,
        description="a running job with no progress and no node change this long is "
        "interrupted (never sooner than twice its own longest silence); null: off",
    )
    interrupt_grace_s: float = Field(
        30.0,
        gt=0,
        description="a stalled job still running this long after its interrupt: "
        "the instance is restarted and the job runs elsewhere",
    )
    rss_mb: int | None = Field(
        None, ge=1, description="an idle instance using more memory (RSS) is restarted"
    )
    vram_mb: int | None = Field(
        None, ge=1, description="an idle instance using more GPU memory (NVML) is restarted"
    )
    idle_free_s: float | None = Field(
        None, gt=0, description="an instance idle this long is told to free its memory (/free)"
    )
    check_s: float = Field(5.0, gt=0, description="how often idle instances are looked at")
    warmup: WarmupSettings | None = Field(
        None, description="run by every instance after each start, before it is ready"
    )
    warmup_instances: dict[int, WarmupSettings | None] = Field(
        default_factory=dict, description="a warm-up per instance index (null: none there)"
    )
    warmup_timeout_s: float = Field(600.0, gt=0, description="a longer warm-up failed")

    @property
    def watches_idle(self) -> bool:
        return (self.idle_free_s, self.rss_mb, self.vram_mb) != (None, None, None)
