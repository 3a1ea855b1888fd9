"""The settings schema: the sections that features own, gathered into one object.

Plain data, validated once; nothing here touches the disk. Each section is defined by the
package that reads it (`install` by provision, `fleet` by supervise, `serve` by the gateway,
...); this module only puts them together, so no feature imports the whole settings object.
Only the composition root (`roles`) and the CLI see all of it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from comfyfleet.assets import AssetSettings
from comfyfleet.auth import AuthSettings
from comfyfleet.dashboard import DashboardSettings
from comfyfleet.facades.openai import OpenAISettings
from comfyfleet.gateway import ServeSettings
from comfyfleet.logs import LogSettings
from comfyfleet.metrics import MetricsSettings
from comfyfleet.models import ModelSettings
from comfyfleet.provision import InstallSettings
from comfyfleet.retention import RetentionSettings
from comfyfleet.storage import StorageSettings
from comfyfleet.supervise import FleetSettings
from comfyfleet.templates import TemplateSettings
from comfyfleet.watchdog import WatchdogSettings
from comfyfleet.webhooks import WebhookSettings


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
    templates: TemplateSettings = Field(default_factory=TemplateSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)  # type: ignore[arg-type]
    retention: RetentionSettings = Field(default_factory=RetentionSettings)  # type: ignore[arg-type]
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings)  # type: ignore[arg-type]

    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
