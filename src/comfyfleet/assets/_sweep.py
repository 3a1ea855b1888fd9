"""Removing stored assets nobody used for a while, without taking one from a job being submitted.

An asset's file records its last use in its modification time: written when stored, stamped
again whenever the same bytes are stored again and whenever a submitted graph names it by id
(`AssetStore.use`, which the media resolver calls before the job is queued). Retention removes a
file whose last use is older than its limit and that no queued or running job names.

The race it must not lose: a graph naming an old asset is being submitted while the asset is
removed. Removal therefore renames the file out of the way first (one atomic step), then looks at
the renamed file's time: a use stamped before the rename shows there, and the file is put back;
a use that comes after the rename finds no file and the submit is refused with `asset_not_found`
instead of queueing a job whose input is gone. Either way no job is queued with a missing input.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

from comfyfleet.assets._store import AssetStore

REMOVING = ".prune-"
"""Prefix of a file being removed (renamed out of the way, about to be deleted)."""

_ASSET_FILE = re.compile(r"^([0-9a-f]{64})\.[A-Za-z0-9]+$")
_LEFTOVERS = (".tmp-", REMOVING)


@dataclass(frozen=True)
class StoredFile:
    """One file of the assets folder, as retention sees it."""

    name: str
    """Its name in the assets folder."""
    asset_id: str | None
    """The asset it holds; None for a leftover (the temp file of an upload that died, a file
    whose removal was cut short)."""
    size: int
    used_at: float
    """Its last use: stored, stored again, or named by a submitted graph."""


def stored_files(store: AssetStore) -> list[StoredFile]:
    """Every asset file and leftover of `store`, oldest use first."""
    try:
        entries = list(os.scandir(store.folder))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        match = _ASSET_FILE.match(entry.name)
        if match is None and not entry.name.startswith(_LEFTOVERS):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        asset_id = match[1] if match else None
        found.append(StoredFile(entry.name, asset_id, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda file: (file.used_at, file.name))


def remove_unused(store: AssetStore, file: StoredFile, used_before: float) -> bool:
    """Remove `file` unless it was used at or after `used_before` (since it was listed); True
    when it was removed. The asset's metadata and owners go with its bytes."""
    path = store.folder / file.name
    if file.asset_id is None:
        return _unlink_if_old(path, used_before)
    aside = store.folder / f"{REMOVING}{file.name}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if aside.stat().st_mtime >= used_before:
        os.replace(aside, path)  # used meanwhile: it stays (the same bytes if stored again)
        return False
    aside.unlink()
    if not path.exists():  # not stored again meanwhile
        meta = store.folder / ".meta"
        (meta / f"{file.asset_id}.json").unlink(missing_ok=True)
        shutil.rmtree(meta / f"{file.asset_id}.owners", ignore_errors=True)
    return True


def _unlink_if_old(path: os.PathLike[str], used_before: float) -> bool:
    try:
        if os.stat(path).st_mtime >= used_before:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
