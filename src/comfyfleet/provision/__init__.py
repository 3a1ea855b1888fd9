"""Installing ComfyUI into a workspace: source, venv, torch, requirements, custom nodes, lock."""

from __future__ import annotations

from comfyfleet.provision._doctor import Check, diagnose
from comfyfleet.provision._installer import InstallResult, default_cache_dir, install
from comfyfleet.provision._lock import Lock, diff_locks, read_lock
from comfyfleet.provision._node_check import (
    ImportReport,
    NodeImport,
    import_reports,
    node_imports,
    parse_import_report,
)
from comfyfleet.provision._node_list import list_path
from comfyfleet.provision._node_ops import NodeRow, add_node, node_rows, remove_node, split_ref
from comfyfleet.provision._node_sets import COMPLETE, NodeSet, node_set, node_sets
from comfyfleet.provision._report import RecordingReporter, Reporter
from comfyfleet.provision._settings import (
    DEFAULT_COMFYUI_VERSION,
    DEFAULT_TORCH_INDEX_URL,
    InstallSettings,
)
from comfyfleet.provision._sources import SourceSpec, parse_source
from comfyfleet.provision._torch import TorchPlan, select_torch
from comfyfleet.provision._volumes import DEFAULT_MIN_FREE_BYTES, volume_checks, write_error

__all__ = [
    "COMPLETE",
    "DEFAULT_COMFYUI_VERSION",
    "DEFAULT_MIN_FREE_BYTES",
    "DEFAULT_TORCH_INDEX_URL",
    "Check",
    "ImportReport",
    "InstallResult",
    "InstallSettings",
    "Lock",
    "NodeImport",
    "NodeRow",
    "NodeSet",
    "RecordingReporter",
    "Reporter",
    "SourceSpec",
    "TorchPlan",
    "add_node",
    "default_cache_dir",
    "diagnose",
    "diff_locks",
    "import_reports",
    "install",
    "list_path",
    "node_imports",
    "node_rows",
    "node_set",
    "node_sets",
    "parse_import_report",
    "parse_source",
    "read_lock",
    "remove_node",
    "select_torch",
    "split_ref",
    "volume_checks",
    "write_error",
]
