"""Settings: one typed, frozen object built once (flags > env `COMFYFLEET_*` > file > defaults).

Each section is defined by the feature that reads it; `Settings` gathers them.
"""

from __future__ import annotations

from comfyfleet.config._load import find_config_file, load_settings
from comfyfleet.config._redact import redacted_settings
from comfyfleet.config._settings import Settings

__all__ = ["Settings", "find_config_file", "load_settings", "redacted_settings"]
