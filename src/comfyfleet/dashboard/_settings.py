"""The `dashboard` section of the settings: whether the pages are served, and to whom."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DashboardSettings(BaseModel):
    """The web pages at `/dashboard/`.

    With API keys on, the pages are behind the same sign-in as everything else. With keys off,
    anyone who reaches the gateway could act on the fleet through them, so they answer only
    browsers on this machine (loopback) unless `allow_remote_without_keys` says otherwise
    (a gateway behind a proxy that authenticates, say).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="serve the pages at /dashboard/")
    allow_remote_without_keys: bool = Field(
        default=False,
        description="with auth off, answer browsers on other machines too (default: loopback only)",
    )
    refresh_s: float = Field(
        default=2.0, ge=0.5, le=60, description="how often live parts of a page refresh"
    )
