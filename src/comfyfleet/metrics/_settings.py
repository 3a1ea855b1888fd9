"""The `metrics` section of the settings: `/metrics` on the gateway, and on agents if asked."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsSettings(BaseModel):
    """`/metrics` in the Prometheus text format.

    Every gateway serves it (with API keys on, to `admin` keys, unless `/metrics` is listed in
    `auth.public_paths`). An `agent` process serves its own machine's numbers (GPUs, downloads,
    phases of the jobs it ran) only when `agent_port` is set: nothing listens unasked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="serve /metrics on the gateway")
    agent_host: str = Field(default="127.0.0.1", description="address of an agent's /metrics")
    agent_port: int | None = Field(
        default=None, ge=1, le=65535, description="port of an agent's /metrics (default: none)"
    )
    refresh_s: float = Field(
        default=2.0, gt=0, le=300, description="how long numbers read from the store are reused"
    )
    scrape_wait_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="how long a scrape waits for fresh numbers before it "
        "answers with the last ones it has",
    )
    follow_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often the job counters read the store's event log",
    )
    nvml: bool = Field(
        default=True, description="read GPU utilisation, memory, temperature and power"
    )
