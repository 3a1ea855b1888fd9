"""The settings schema. Plain data, validated once; nothing here touches the disk."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from comfyfleet.assets import AssetSettings
from comfyfleet.auth import AuthSettings
from comfyfleet.models import ModelSettings
from comfyfleet.storage import StorageSettings
from comfyfleet.webhooks import WebhookSettings

DEFAULT_COMFYUI_VERSION = "0.3.75"
"""The ComfyUI release comfyfleet pins and tests against."""

DEFAULT_TORCH_INDEX_URL = "https://download.pytorch.org/whl"
"""Base of PyTorch's own wheel indexes; `/cu128`, `/cpu`, `/rocm6.4` ... are appended."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InstallSettings(_Frozen):
    """What `comfyfleet install` puts into the workspace."""

    source: str = Field(
        "git",
        description="git[:URL] | index:PKG==VER[#SUBDIR] | path:DIR | archive:FILE_OR_URL[#SUBDIR]",
    )
    comfyui_version: str = Field(DEFAULT_COMFYUI_VERSION, description="release tag for git sources")
    torch: str = Field(
        "auto", description="auto | existing | cpu | cu126 | cu128 | cu130 | rocm | a pip spec"
    )
    torch_index_url: str = Field(DEFAULT_TORCH_INDEX_URL, description="base of the wheel indexes")
    nodes_file: Path | None = Field(None, description="YAML list of custom nodes to install")
    python: str | None = Field(None, description="interpreter for the venv (default: this one)")
    pip_args: tuple[str, ...] = Field((), description="extra arguments for every pip install")
    repair_torchvision: bool = Field(
        True, description="repair a torchvision wheel built for another torch (with a warning)"
    )


class FleetSettings(_Frozen):
    """How `comfyfleet up` runs the ComfyUI instances."""

    instances: int | None = Field(None, ge=1, description="CPU instances (default: one per GPU)")
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
    stop_grace_s: float = Field(15.0, ge=0, description="SIGTERM -> SIGKILL")
    probe_interval_s: float = Field(1.0, gt=0)
    probe_timeout_s: float = Field(5.0, gt=0)
    unhealthy_after_s: float = Field(
        60.0, gt=0, description="a ready instance that stops answering this long is restarted"
    )
    database: Literal["memory", "per-instance"] = "memory"
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    log_backups: int = Field(5, ge=0)

    @field_validator("gpus", mode="before")
    @classmethod
    def _split_gpus(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        if isinstance(value, int):
            return (value,)
        return value


class ServeSettings(_Frozen):
    """How `comfyfleet serve` runs the job API in front of the instances."""

    host: str = Field("127.0.0.1", description="address the gateway listens on")
    port: int = Field(8080, ge=1, le=65535)
    store: str = Field(
        "sqlite://",
        description="sqlite:///PATH (default: state/jobs.db) | postgresql://... | memory://",
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="JSON request body limit")
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
    slots_per_instance: int = Field(2, ge=1, le=8, description="jobs submitted to one instance")
    lease_s: float = Field(15.0, gt=0, description="a worker silent this long loses its jobs")


class Settings(BaseSettings):
    """Everything comfyfleet reads from outside, in one frozen object passed down explicitly."""

    model_config = SettingsConfigDict(
        env_prefix="COMFYFLEET_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    workspace: Path = Field(Path("comfyfleet-workspace"), description="the workspace folder")
    models_root: Path | None = Field(None, description="model files (default: WORKSPACE/models)")
    input_dir: Path | None = Field(None, description="ComfyUI inputs (default: WORKSPACE/input)")
    output_dir: Path | None = Field(None, description="ComfyUI outputs (default: WORKSPACE/output)")
    model_folders: dict[str, str] = Field(
        default_factory=dict, description="per folder type: path relative to models_root"
    )
    install: InstallSettings = Field(default_factory=InstallSettings)  # type: ignore[arg-type]
    fleet: FleetSettings = Field(default_factory=FleetSettings)  # type: ignore[arg-type]
    auth: AuthSettings = Field(default_factory=AuthSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)  # type: ignore[arg-type]
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)
    storage_targets: dict[str, StorageSettings] = Field(
        default_factory=dict, description="named output stores a job may choose with 'storage'"
    )
    assets: AssetSettings = Field(default_factory=AssetSettings)  # type: ignore[arg-type]
    models: ModelSettings = Field(default_factory=ModelSettings)
