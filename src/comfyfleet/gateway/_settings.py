"""The `serve` section of the settings: the job API, its limits, and the job service around it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServeSettings(_Frozen):
    """How `comfyfleet serve` runs the job API in front of the instances."""

    host: str = Field("127.0.0.1", description="address the gateway listens on")
    port: int = Field(8080, ge=1, le=65535)
    store: str = Field(
        "sqlite://",
        description="sqlite:///PATH (default: state/jobs.db) | postgresql://... | memory://",
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="JSON request body limit")
    max_json_depth: int = Field(
        64, ge=4, le=500, description="objects and arrays nested in a JSON body, at most"
    )
    max_json_items: int = Field(
        1_000_000, ge=1000, description="values inside the objects and arrays of a JSON body"
    )
    max_json_string_bytes: int = Field(
        20 * 1024 * 1024, ge=64 * 1024, description="the longest string in a JSON body"
    )
    max_graph_nodes: int = Field(100_000, ge=1, description="nodes in one submitted workflow")
    body_timeout_s: float = Field(
        30.0, gt=0, description="longest wait for the next part of a request body (then 408)"
    )
    max_queued: int = Field(1000, ge=1, description="queued jobs before submissions get 429")
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 429")
    max_attempts: int = Field(3, ge=1, le=10, description="default attempts per job")
    max_wait_s: float = Field(600.0, gt=0, description="longest ?wait=true / Prefer: wait=N")
    queued_timeout_s: float | None = Field(None, gt=0, description="default queue timeout")
    running_timeout_s: float | None = Field(None, gt=0, description="default running timeout")
    idempotency_ttl_s: float = Field(
        86400.0, gt=0, description="how long an Idempotency-Key replays its first answer"
    )
    sse_heartbeat_s: float = Field(15.0, gt=0, description="comment lines on idle event streams")
    max_event_streams: int = Field(
        1000, ge=1, description="event streams (SSE) open at once on this gateway (then 429)"
    )
    max_event_streams_per_key: int = Field(
        100, ge=1, description="event streams one API key may hold open at once (then 429)"
    )
    slots_per_instance: int = Field(2, ge=1, le=8, description="jobs submitted to one instance")
    lease_s: float = Field(15.0, gt=0, description="a worker silent this long loses its jobs")
    affinity_max_delay_s: float | None = Field(
        30.0,
        ge=0,
        description="how long an instance may prefer jobs for the models it holds over an older"
        " job (then the older job goes first); null: no model affinity",
    )
    max_running_per_key: int | None = Field(
        None, ge=1, description="jobs of one API key running at once (a key's own limit wins)"
    )
    agent_timeout_s: float = Field(
        15.0, gt=0, description="an agent silent this long is gone: its instances serve nothing"
    )
    agent_heartbeat_s: float = Field(
        3.0, gt=0, description="how often an agent reports itself and its instances"
    )
