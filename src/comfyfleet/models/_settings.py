"""`ModelSettings`: how models are found, fetched and cached. Plain frozen data, no disk access.

The integrator adds it to :class:`comfyfleet.config.Settings` as `models`; until a Settings has
that field, :func:`model_settings_of` gives the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024
GiB = 1024 * MiB


class ModelSettings(BaseModel):
    """Settings of the `models` package (`models:` in comfyfleet.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extra_loaders: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="custom loader nodes: class -> {input: folder type}; the files they name"
        " count as a job's models for routing, like those of ComfyUI's own loaders",
    )
    manifests: tuple[Path, ...] = Field(
        default=(),
        description="extra manifest/preset YAML files (the shipped presets are always loaded)",
    )
    concurrency: int = Field(
        default=3, ge=1, le=64, description="files downloaded at the same time"
    )
    connections: int = Field(
        default=4, ge=1, le=32, description="parallel segments for one large file"
    )
    segment_bytes: int = Field(
        default=32 * MiB, ge=64 * 1024, description="size of one segment (one range request)"
    )
    parallel_min_bytes: int = Field(
        default=64 * MiB,
        ge=0,
        description="files at least this big are fetched in parallel segments",
    )
    checkpoint_bytes: int = Field(
        default=32 * MiB,
        ge=64 * 1024,
        description="progress is made durable (fsync + state file) every this many bytes, so a"
        " killed download refetches at most this much per connection",
    )
    chunk_bytes: int = Field(default=1 * MiB, ge=4096, description="read size from the network")
    hash_buffer_bytes: int = Field(
        default=128 * MiB,
        ge=0,
        description="out-of-order segment data kept in memory for the in-order sha256; beyond it"
        " the bytes are read back from disk",
    )
    retries: int = Field(
        default=5, ge=0, description="transient failures in a row before giving up"
    )
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=15.0, ge=0)
    connect_timeout_s: float = Field(default=30.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    free_space_margin_bytes: int = Field(
        default=256 * MiB, ge=0, description="free space left over after a download, at least"
    )
    fsync_checkpoints: bool = Field(
        default=False,
        description="fsync the data before each state write; a killed process needs no fsync"
        " (its writes are in the page cache), only a power cut does, and the sha256 catches that",
    )
    fsync_commit: bool = Field(
        default=True, description="fsync a finished file before it gets its final name"
    )
    preallocate: bool = Field(default=True, description="reserve the file's blocks before writing")
    direct_io: bool = Field(
        default=True,
        description="write whole aligned chunks with O_DIRECT where the filesystem allows it:"
        " no copy into the page cache, and the disk writes while the network reads, so the"
        " final fsync has almost nothing left to do",
    )
    url_cache_folder: str = Field(
        default="comfyfleet-url-cache",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="subfolder of each folder type that holds models given as URLs",
    )
    url_cache_max_bytes: int = Field(
        default=50 * GiB,
        ge=0,
        description="size limit of the URL cache; least recently used go first",
    )
    huggingface_url: str = Field(
        default="https://huggingface.co", description="base of hf:// sources"
    )
    civitai_url: str = Field(
        default="https://civitai.com", description="base of civitai:// sources"
    )
    progress_interval_s: float = Field(
        default=0.25, gt=0, description="how often progress is reported"
    )


def model_settings_of(settings: Any) -> ModelSettings:
    """The `models` section of a Settings object, or the defaults where it has none."""
    found = getattr(settings, "models", None)
    return found if isinstance(found, ModelSettings) else ModelSettings()
