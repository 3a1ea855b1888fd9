"""Models given as URLs in a workflow: fetched once into a cache folder ComfyUI can see.

A URL input becomes `<folder type>/<url_cache_folder>/<hash of the URL>-<file name>`, inside the
models root, so ComfyUI lists it like any other file and the workflow's input is rewritten to
that relative name. The cache has a size limit; the least recently used files go first (use is
the file's access time, set on every use, so the mtime the hash cache relies on never changes).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from comfyfleet.models._folders import ModelFolders
from comfyfleet.models._settings import ModelSettings
from comfyfleet.models._sources import source_basename
from comfyfleet.models._state import PART_SUFFIX, STATE_SUFFIX


class UrlCache:
    def __init__(self, folders: ModelFolders, settings: ModelSettings) -> None:
        self.folders = folders
        self.folder = settings.url_cache_folder
        self.max_bytes = settings.url_cache_max_bytes

    def name_for(self, url: str) -> str:
        """The input value ComfyUI gets for `url` (relative to the folder type)."""
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return f"{self.folder}/{digest}-{source_basename(url)}"

    def path_for(self, folder_type: str, url: str) -> Path:
        return self.folders.primary(folder_type) / self.name_for(url)

    def touch(self, path: Path) -> None:
        """Mark a cached file as used now (its access time; the mtime stays)."""
        try:
            stat = path.stat()
            os.utime(path, ns=(time.time_ns(), stat.st_mtime_ns))
        except OSError:
            pass

    def files(self) -> list[Path]:
        found: list[Path] = []
        for folder_type in self.folders.types:
            folder = self.folders.primary(folder_type) / self.folder
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.is_file() and not path.name.endswith((PART_SUFFIX, STATE_SUFFIX)):
                    found.append(path)
        return found

    def evict(self, keep: Iterable[Path] = ()) -> list[Path]:
        """Delete least recently used files until the cache fits its limit; `keep` stays."""
        kept = {p.absolute() for p in keep}
        files = [(p, p.stat()) for p in self.files()]
        total = sum(stat.st_size for _, stat in files)
        removed: list[Path] = []
        for path, stat in sorted(files, key=lambda item: item[1].st_atime_ns):
            if total <= self.max_bytes:
                break
            if path.absolute() in kept:
                continue
            path.unlink(missing_ok=True)
            total -= stat.st_size
            removed.append(path)
        return removed
