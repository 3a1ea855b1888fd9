"""Model files: presets and manifests, a resumable verified downloader, the index, fetch-before-run.

Build a :class:`ModelLibrary` (from Settings, or from its parts in tests) and ask it; or use the
parts: :class:`Downloader` for files, :func:`required_models` / :func:`ensure_models` for
workflows, :class:`Catalog` for manifests.
"""

from __future__ import annotations

from comfyfleet.models._downloader import (
    Downloader,
    DownloadItem,
    DownloadResult,
    DownloadWatch,
)
from comfyfleet.models._ensure import ensure_models, plan_downloads
from comfyfleet.models._errors import (
    ChecksumMismatch,
    DownloadError,
    InsufficientSpace,
    ManifestError,
    ModelError,
    ModelMissing,
    ModelNotFound,
    PresetNotFound,
    SizeMismatch,
    SourceAuthError,
    SourceNotFound,
)
from comfyfleet.models._folders import ModelFolders
from comfyfleet.models._hashing import sha256_file
from comfyfleet.models._index import FileStatus, ModelEntry, ModelIndex, PresetStatus
from comfyfleet.models._library import ModelLibrary
from comfyfleet.models._loaders import LOADER_INPUTS, ModelNeed, required_models
from comfyfleet.models._manifest import (
    Catalog,
    Manifest,
    ModelFile,
    Preset,
    load_manifest,
    parse_manifest,
)
from comfyfleet.models._pinning import UrlGuard
from comfyfleet.models._progress import DownloadProgress, ProgressCallback, human_size
from comfyfleet.models._settings import ModelSettings, model_settings_of
from comfyfleet.models._sources import ResolvedSource, is_url, resolve_source
from comfyfleet.models._stream import ObjectReader, SourceStat, Streamer
from comfyfleet.models._urlcache import UrlCache

__all__ = [
    "LOADER_INPUTS",
    "Catalog",
    "ChecksumMismatch",
    "DownloadError",
    "DownloadItem",
    "DownloadProgress",
    "DownloadResult",
    "DownloadWatch",
    "Downloader",
    "FileStatus",
    "InsufficientSpace",
    "Manifest",
    "ManifestError",
    "ModelEntry",
    "ModelError",
    "ModelFile",
    "ModelFolders",
    "ModelIndex",
    "ModelLibrary",
    "ModelMissing",
    "ModelNeed",
    "ModelNotFound",
    "ModelSettings",
    "ObjectReader",
    "Preset",
    "PresetNotFound",
    "PresetStatus",
    "ProgressCallback",
    "ResolvedSource",
    "SizeMismatch",
    "SourceAuthError",
    "SourceNotFound",
    "SourceStat",
    "Streamer",
    "UrlCache",
    "UrlGuard",
    "ensure_models",
    "human_size",
    "is_url",
    "load_manifest",
    "model_settings_of",
    "parse_manifest",
    "plan_downloads",
    "required_models",
    "resolve_source",
    "sha256_file",
]
