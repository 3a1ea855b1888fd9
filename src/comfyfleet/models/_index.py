"""The model index: which model files are on disk, their sha256, and which presets are complete.

Hashing a 7 GB checkpoint takes seconds, so sha256s are kept in a cache file keyed by path and
validated by size and mtime: a re-scan hashes only new or changed files, and a file the
downloader verified is recorded without being read again. The cache lives in the workspace's
state folder, not beside the models (the models root may be a read-only shared volume).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from comfyfleet.models._errors import ModelNotFound
from comfyfleet.models._expected import git_blob_of
from comfyfleet.models._folders import ModelFolders
from comfyfleet.models._hashing import sha256_file
from comfyfleet.models._manifest import ModelFile, Preset
from comfyfleet.models._state import PART_SUFFIX, STATE_SUFFIX, discard_partial

_SKIP_SUFFIXES = (PART_SUFFIX, STATE_SUFFIX, ".tmp")

FileState = Literal["ok", "unverified", "missing", "wrong_size", "wrong_hash"]


@dataclass(frozen=True)
class ModelEntry:
    """One model file on disk. `name` is what a loader node's input says."""

    folder_type: str
    name: str
    path: Path
    size: int
    mtime: float
    sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


@dataclass(frozen=True)
class FileStatus:
    file: ModelFile
    state: FileState
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.file.to_dict(), "state": self.state, "path": str(self.path or "") or None}


@dataclass(frozen=True)
class PresetStatus:
    preset: Preset
    files: tuple[FileStatus, ...]

    @property
    def complete(self) -> bool:
        return all(f.state in ("ok", "unverified") for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.preset.to_dict(),
            "complete": self.complete,
            "files": [f.to_dict() for f in self.files],
        }


class HashCache:
    """path -> (size, mtime_ns, sha256), saved as JSON (atomically) when changed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, list[Any]] = {}
        self._dirty = False
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and isinstance(data.get("files"), dict):
                    self._entries = data["files"]
            except (OSError, ValueError):
                pass

    def get(self, path: Path, stat: os.stat_result) -> str | None:
        with self._lock:
            entry = self._entries.get(str(path))
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return str(entry[2])
        return None

    def put(self, path: Path, stat: os.stat_result, sha256: str) -> None:
        with self._lock:
            self._entries[str(path)] = [stat.st_size, stat.st_mtime_ns, sha256]
            self._dirty = True

    def drop(self, path: Path) -> None:
        with self._lock:
            self._dirty |= self._entries.pop(str(path), None) is not None

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        with self._lock:
            payload = json.dumps({"version": 1, "files": self._entries})
            self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(payload, encoding="utf-8")
        os.replace(tmp, self.path)


class ModelIndex:
    """Scans the model folders; knows sha256s through the :class:`HashCache`."""

    def __init__(self, folders: ModelFolders, cache_path: Path | None = None) -> None:
        self.folders = folders
        self.cache = HashCache(cache_path)

    def scan(self, folder_type: str | None = None, *, verify: bool = False) -> list[ModelEntry]:
        """Every model file (of one type, or all). `verify` hashes files the cache lacks."""
        types = [folder_type] if folder_type else self.folders.types
        entries: list[ModelEntry] = []
        for kind in types:
            seen: set[str] = set()
            for folder in self.folders.dirs(kind):
                for path in _files(folder):
                    name = path.relative_to(folder).as_posix()
                    if name in seen:
                        continue  # ComfyUI takes the first folder's file
                    seen.add(name)
                    entries.append(self._entry(kind, name, path, verify))
        self.cache.save()
        return entries

    def _entry(self, folder_type: str, name: str, path: Path, verify: bool) -> ModelEntry:
        stat = path.stat()
        sha = self._sha256(path, stat, verify)
        return ModelEntry(folder_type, name, path, stat.st_size, stat.st_mtime, sha)

    def _sha256(self, path: Path, stat: os.stat_result, compute: bool) -> str | None:
        """The cached sha256, else (with `compute`) a fresh one, cached but not yet saved."""
        sha = self.cache.get(path, stat)
        if sha is None and compute:
            sha = sha256_file(path)
            self.cache.put(path, stat, sha)
        return sha

    def hash_of(self, path: Path, *, compute: bool = True) -> str | None:
        sha = self._sha256(path, path.stat(), compute)
        self.cache.save()  # a no-op unless a hash was computed
        return sha

    def record(self, path: Path, sha256: str) -> None:
        """A file whose sha256 is known (the downloader just verified it)."""
        self.cache.put(path, path.stat(), sha256)
        self.cache.save()

    def status(self, file: ModelFile, *, verify: bool = False) -> FileStatus:
        path = self.folders.find(file.type, file.filename)
        if path is None:
            return FileStatus(file, "missing")
        if file.size is not None and path.stat().st_size != file.size:
            return FileStatus(file, "wrong_size", path)
        if file.sha256 is None:
            if file.git_blob is None or not verify:
                return FileStatus(file, "unverified", path)
            return FileStatus(
                file, "ok" if git_blob_of(path) == file.git_blob else "wrong_hash", path
            )
        sha = self.hash_of(path, compute=verify)
        if sha is None:
            return FileStatus(file, "unverified", path)
        return FileStatus(file, "ok" if sha == file.sha256 else "wrong_hash", path)

    def preset_status(self, preset: Preset, *, verify: bool = False) -> PresetStatus:
        return PresetStatus(preset, tuple(self.status(f, verify=verify) for f in preset.files))

    def remove(self, folder_type: str, name: str) -> Path:
        """Delete one model file (and any partial download of it)."""
        path = self.folders.find(folder_type, name)
        if path is None:
            raise ModelNotFound(
                f"no {folder_type} file '{name}' in the models folders",
                hint="`comfyfleet models list` shows the files there",
            )
        path.unlink()
        discard_partial(path)
        self.cache.drop(path)
        self.cache.save()
        return path


def _files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for directory, subdirs, names in os.walk(folder, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            found.append(Path(directory) / name)
    return found
