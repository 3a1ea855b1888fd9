"""The `fleet` section of the settings: how the supervisor runs the ComfyUI instances."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FleetSettings(_Frozen):
    """How `comfyfleet up` runs the ComfyUI instances."""

    instances: int | None = Field(
        None, ge=0, description="CPU instances (default: one per GPU; 0: attached servers only)"
    )
    gpus: tuple[int, ...] | None = Field(None, description="GPU indexes to use (default: all)")
    host: str = Field("127.0.0.1", description="address instances listen on")
    base_port: int = Field(8188, ge=1, le=65535)
    port_conflict: Literal["next", "fail"] = Field(
        "next", description="a busy port: take the next free one (and say so) or fail"
    )
    extra_args: tuple[str, ...] = Field((), description="ComfyUI flags for every instance")
    instance_args: dict[int, tuple[str, ...]] = Field(
        default_factory=dict, description="ComfyUI flags for one instance, by index"
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment")
    pre_start_hook: Path | None = Field(None, description="script run before each start")
    hook_timeout_s: float = Field(300.0, gt=0)
    startup_timeout_s: float = Field(180.0, gt=0, description="start -> ready, else failed start")
    start_retries: int = Field(3, ge=0, description="failed starts in a row before fatal")
    backoff_initial_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    backoff_factor: float = Field(2.0, ge=1)
    backoff_reset_s: float = Field(60.0, ge=0, description="ready this long resets the backoff")
    crash_restart_s: float = Field(
        0.0,
        ge=0,
        description="wait before restarting an instance that crashed after a good run "
        "(crashes again before backoff_reset_s back off as failed starts do)",
    )
    stop_grace_s: float = Field(15.0, ge=0, description="SIGTERM -> SIGKILL")
    probe_interval_s: float = Field(1.0, gt=0)
    probe_timeout_s: float = Field(5.0, gt=0)
    unhealthy_after_s: float = Field(
        60.0, gt=0, description="a ready instance that stops answering this long is restarted"
    )
    fork_server: bool = Field(
        True,
        description="start instances by forking a process that has imported ComfyUI's "
        "libraries already (Linux): a restart then takes about a second; off: each start "
        "is ComfyUI's own",
    )
    fork_server_preload: tuple[str, ...] = Field(
        (), description="more modules for the fork server to import (`module` or `module:name`)"
    )
    database: Literal["memory", "per-instance"] = "memory"
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    log_backups: int = Field(5, ge=0)
    attach: tuple[str, ...] = Field(
        (), description="ComfyUI servers comfyfleet did not start, by URL: probed, never run"
    )
    attach_failures: int = Field(
        3, ge=1, description="failed probes in a row before a serving attached server is lost"
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _split_gpus(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        if isinstance(value, int):
            return (value,)
        return value

    @field_validator("attach", mode="before")
    @classmethod
    def _check_attach(cls, value: object) -> object:
        urls = (value,) if isinstance(value, str) else value
        if not isinstance(urls, list | tuple):
            return value
        return tuple(attach_url(str(url)) for url in urls)


def attach_url(url: str) -> str:
    """`url` as the base URL of an attached server (no trailing slash), or a ValueError that
    names it: only http(s) URLs with a host can be probed and sent jobs."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError as exc:
        raise ValueError(f"attached server {url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"attached server {url!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"attached server {url!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"attached server {url!r}: a base URL takes no query or fragment")
    return text.rstrip("/")
