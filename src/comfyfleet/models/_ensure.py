"""Fetch before run: make every model file a workflow names present before ComfyUI sees it.

For each loader input (see `_loaders`): a file on disk is fine; a missing file that a manifest
knows is downloaded (with progress, verified); a URL is fetched into the URL cache and the input
rewritten to the cached name; a missing file nobody knows raises :class:`ModelMissing`, naming
the node, its class, the input and the file, before anything is downloaded.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from comfyfleet.models._downloader import Downloader, DownloadItem
from comfyfleet.models._errors import ModelMissing
from comfyfleet.models._folders import ModelFolders
from comfyfleet.models._loaders import ModelNeed, required_models
from comfyfleet.models._manifest import Catalog
from comfyfleet.models._pinning import UrlGuard
from comfyfleet.models._progress import ProgressCallback
from comfyfleet.models._urlcache import UrlCache


def plan_downloads(
    workflow: Mapping[str, Any],
    *,
    folders: ModelFolders,
    catalog: Catalog,
    url_cache: UrlCache,
    loaders: Mapping[str, Mapping[str, str]] | None = None,
    url_guard: UrlGuard | None = None,
) -> tuple[list[DownloadItem], list[tuple[ModelNeed, str, Path]]]:
    """What must be downloaded, and which URL inputs become which cached names (no I/O but
    looking for files). Raises :class:`ModelMissing` for the first unknown missing file. A URL
    input no manifest knows is the client's choice: it is fetched under `url_guard`."""
    items: dict[Path, DownloadItem] = {}
    rewrites: list[tuple[ModelNeed, str, Path]] = []
    for need in required_models(workflow, loaders):
        if need.is_url:
            dest = url_cache.path_for(need.folder_type, need.value)
            rewrites.append((need, url_cache.name_for(need.value), dest))
            if not dest.exists():
                known = catalog.by_source(need.value)
                items[dest] = (
                    DownloadItem.of(known, dest)
                    if known
                    else DownloadItem(need.value, dest, guard=url_guard)
                )
            continue
        if folders.find(need.folder_type, need.value) is not None:
            continue
        file = catalog.find(need.folder_type, need.value)
        if file is None:
            raise ModelMissing(
                need.node_id, need.class_type, need.input_name, need.folder_type, need.value
            )
        dest = folders.target(file.type, file.filename)
        items.setdefault(dest, DownloadItem.of(file, dest))
    return list(items.values()), rewrites


async def ensure_models(
    workflow: Mapping[str, Any],
    *,
    folders: ModelFolders,
    catalog: Catalog,
    downloader: Downloader,
    on_progress: ProgressCallback | None = None,
    url_cache: UrlCache | None = None,
    loaders: Mapping[str, Mapping[str, str]] | None = None,
    url_guard: UrlGuard | None = None,
) -> dict[str, Any]:
    """The workflow to submit: a copy with URL inputs rewritten, once every file is on disk."""
    cache = url_cache or UrlCache(folders, downloader.settings)
    items, rewrites = plan_downloads(
        workflow,
        folders=folders,
        catalog=catalog,
        url_cache=cache,
        loaders=loaders,
        url_guard=url_guard,
    )
    if items:
        await downloader.download_all(items, on_progress)
    result = copy.deepcopy(dict(workflow))
    for need, name, dest in rewrites:
        result[need.node_id]["inputs"][need.input_name] = name
        cache.touch(dest)
    if rewrites:
        cache.evict(keep=[dest for _, _, dest in rewrites])
    return result
