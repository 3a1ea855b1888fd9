"""The `install` section of the settings: what `comfyfleet install` puts into the workspace."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_COMFYUI_VERSION = "0.33.0"
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
    comfyui_version: str = Field(
        DEFAULT_COMFYUI_VERSION,
        description="release for git sources (X.Y.Z), or latest: the newest vX.Y.Z tag",
    )
    torch: str = Field(
        "auto", description="auto | existing | cpu | cu126 | cu128 | cu130 | rocm | a pip spec"
    )
    torch_index_url: str = Field(DEFAULT_TORCH_INDEX_URL, description="base of the wheel indexes")
    nodes_file: Path | None = Field(
        None,
        description="YAML list of custom nodes to install (default: WORKSPACE/nodes.yaml when "
        "it exists, the list `comfyfleet nodes add` writes)",
    )
    node_sets: tuple[str, ...] = Field(
        (), description="shipped custom-node sets to install too (popular, video, complete)"
    )
    python: str | None = Field(None, description="interpreter for the venv (default: this one)")
    pip_args: tuple[str, ...] = Field((), description="extra arguments for every pip install")
    repair_torchvision: bool = Field(
        True, description="repair a torchvision wheel built for another torch (with a warning)"
    )
