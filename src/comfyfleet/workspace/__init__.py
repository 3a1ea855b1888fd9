"""The on-disk layout of a workspace and the `extra_model_paths.yaml` that points ComfyUI at it."""

from __future__ import annotations

from comfyfleet.workspace._layout import LayoutSettings, Workspace
from comfyfleet.workspace._model_paths import (
    MODEL_FOLDER_TYPES,
    render_extra_model_paths,
    write_extra_model_paths,
)

__all__ = [
    "MODEL_FOLDER_TYPES",
    "LayoutSettings",
    "Workspace",
    "render_extra_model_paths",
    "write_extra_model_paths",
]
