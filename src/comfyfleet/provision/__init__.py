"""Installing ComfyUI into a workspace: source, venv, torch, requirements, custom nodes, lock."""

from __future__ import annotations

from comfyfleet.provision._doctor import diagnose
from comfyfleet.provision._installer import InstallResult, default_cache_dir, install
from comfyfleet.provision._lock import Lock, diff_locks, read_lock
from comfyfleet.provision._report import RecordingReporter, Reporter
from comfyfleet.provision._settings import (
    DEFAULT_COMFYUI_VERSION,
    DEFAULT_TORCH_INDEX_URL,
    InstallSettings,
)
from comfyfleet.provision._sources import SourceSpec, parse_source
from comfyfleet.provision._torch import TorchPlan, select_torch

__all__ = [
    "DEFAULT_COMFYUI_VERSION",
    "DEFAULT_TORCH_INDEX_URL",
    "InstallResult",
    "InstallSettings",
    "Lock",
    "RecordingReporter",
    "Reporter",
    "SourceSpec",
    "TorchPlan",
    "default_cache_dir",
    "diagnose",
    "diff_locks",
    "install",
    "parse_source",
    "read_lock",
    "select_torch",
]
