"""`ModelLibrary`: the models root, the catalog, the index and the downloader, built together.

The CLI, the gateway and the agent each build one from :class:`Settings` and call it; nothing
here is global, so tests build theirs around a temporary folder and a loopback server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from comfyfleet.models._downloader import Downloader, DownloadItem, DownloadResult
from comfyfleet.models._ensure import ensure_models
from comfyfleet.models._errors import ModelError
from comfyfleet.models._folders import ModelFolders
from comfyfleet.models._index import ModelEntry, ModelIndex, PresetStatus
from comfyfleet.models._manifest import Catalog
from comfyfleet.models._objects import object_readers
from comfyfleet.models._pinning import UrlGuard
from comfyfleet.models._progress import ProgressCallback
from comfyfleet.models._settings import ModelSettings, model_settings_of
from comfyfleet.models._sources import check_source, source_basename
from comfyfleet.models._stream import ObjectReader, Streamer
from comfyfleet.models._urlcache import UrlCache
from comfyfleet.netguard import NetPolicy

INDEX_FILE = "model-index.json"
LOCKS_DIR = "model-locks"


class ModelLibrary:
    """Everything about model files for one models root."""

    def __init__(
        self,
        folders: ModelFolders,
        settings: ModelSettings | None = None,
        *,
        catalog: Catalog | None = None,
        state_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        streamers: Mapping[str, Streamer | ObjectReader] | None = None,
        url_guard: UrlGuard | None = None,
    ) -> None:
        self.settings = settings or ModelSettings()
        self.url_guard = url_guard or UrlGuard(NetPolicy())
        """What URLs in job graphs may reach (public addresses only, unless the policy says)."""
        self.folders = folders
        self.catalog = catalog if catalog is not None else Catalog.load(self.settings.manifests)
        self.index = ModelIndex(folders, state_dir / INDEX_FILE if state_dir else None)
        self.downloader = Downloader(
            self.settings,
            env=env,
            streamers=streamers,
            lock_dir=state_dir / LOCKS_DIR if state_dir else None,
            on_verified=self.index.record,
        )
        self.url_cache = UrlCache(folders, self.settings)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> ModelLibrary:
        """From a :class:`comfyfleet.config.Settings` (its `models` section where it has one;
        `s3://` and `az://` sources are read with its `storage` settings)."""
        from comfyfleet.workspace import Workspace

        workspace = Workspace.from_settings(settings)
        storage = getattr(settings, "storage", None)
        if storage is not None and "streamers" not in kwargs:
            kwargs["streamers"] = object_readers(storage)
        assets = getattr(settings, "assets", None)
        if assets is not None and "url_guard" not in kwargs:
            kwargs["url_guard"] = UrlGuard(assets.net_policy())  # the media inputs' policy
        return cls(
            ModelFolders.from_settings(settings),
            model_settings_of(settings),
            state_dir=workspace.state_dir,
            **kwargs,
        )

    # --- what is there --------------------------------------------------------------------
    def models(self, folder_type: str | None = None, *, verify: bool = False) -> list[ModelEntry]:
        if folder_type is not None:
            self.folders.dirs(folder_type)  # a clear error for an unknown type
        return self.index.scan(folder_type, verify=verify)

    def presets(self, *, verify: bool = False) -> list[PresetStatus]:
        return [
            self.index.preset_status(preset, verify=verify)
            for preset in sorted(self.catalog.presets.values(), key=lambda p: p.name)
        ]

    def remove(self, folder_type: str, name: str) -> Path:
        return self.index.remove(folder_type, name)

    # --- getting files --------------------------------------------------------------------
    def preset_items(self, name: str) -> list[DownloadItem]:
        preset = self.catalog.preset(name)
        return [DownloadItem.of(f, self.folders.target(f.type, f.filename)) for f in preset.files]

    def source_item(
        self,
        source: str,
        *,
        folder_type: str | None = None,
        filename: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
    ) -> DownloadItem:
        """A download of one source; a manifest that knows the source fills in the rest."""
        check_source(source)
        known = self.catalog.by_source(source)
        kind = folder_type or (known.type if known else None)
        if kind is None:
            raise ModelError(
                f"{source}: no folder type given and no manifest knows this source",
                hint="pass --type (checkpoints, loras, vae, ...)",
            )
        name = filename or (known.filename if known else source_basename(source))
        return DownloadItem(
            source,
            self.folders.target(kind, name),  # an unknown folder type is a ModelError here
            size if size is not None else (known.size if known else None),
            sha256 or (known.sha256 if known else None),
            git_blob=known.git_blob if known and not sha256 else None,
        )

    async def install_preset(
        self, name: str, on_progress: ProgressCallback | None = None
    ) -> list[DownloadResult]:
        return await self.downloader.download_all(self.preset_items(name), on_progress)

    async def install_source(
        self,
        source: str,
        *,
        folder_type: str,
        filename: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> list[DownloadResult]:
        """Download one source a client chose (the API's model install): its connections are
        held to `url_guard`, as a model URL in a job's graph is."""
        item = self.source_item(
            source, folder_type=folder_type, filename=filename, size=size, sha256=sha256
        )
        return await self.downloader.download_all(
            [replace(item, guard=self.url_guard)], on_progress
        )

    async def ensure(
        self, workflow: Mapping[str, Any], on_progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Fetch before run (see :func:`ensure_models`) with this library's parts."""
        return await ensure_models(
            workflow,
            folders=self.folders,
            catalog=self.catalog,
            downloader=self.downloader,
            on_progress=on_progress,
            url_cache=self.url_cache,
            url_guard=self.url_guard,
        )
