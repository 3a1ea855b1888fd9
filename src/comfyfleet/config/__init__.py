"""Settings: one typed, frozen object built once (flags > env `COMFYFLEET_*` > file > defaults)."""

from __future__ import annotations

from comfyfleet.config._load import find_config_file, load_settings
from comfyfleet.config._settings import (
    DEFAULT_COMFYUI_VERSION,
    FleetSettings,
    InstallSettings,
    ServeSettings,
    Settings,
)

__all__ = [
    "DEFAULT_COMFYUI_VERSION",
    "FleetSettings",
    "InstallSettings",
    "ServeSettings",
    "Settings",
    "find_config_file",
    "load_settings",
]
