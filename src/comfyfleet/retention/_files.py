"""Output folders and temp files on this machine's disk: listing them, and removing one only if
nothing was written to it since it was listed.

The output folder holds one folder per job (`<job id>/`, where ComfyUI writes its files and
from where local storage serves them), and whatever was saved there outside jobs (the editor's
own runs): each top-level entry is one unit, whose age is its newest write and whose size is all
it holds. Hidden entries are not outputs and are left alone. Only local files are ever removed:
copies in S3 or Azure are the bucket's business (its own lifecycle rules).

Removal first renames the entry aside (one atomic step: a writer then creates a fresh folder
under the old name instead of writing into one being deleted), looks again, and puts it back if
it was written to since it was listed; otherwise it is deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REMOVING = ".prune-"


@dataclass(frozen=True)
class Entry:
    """A file or a folder (with everything in it) that is removed as one."""

    name: str
    """Its name as shown: relative to the folder it was listed from."""
    path: Path
    bytes: int
    at: float
    """Its newest write (a folder: the newest of itself and everything in it)."""


def output_entries(folder: Path) -> list[Entry]:
    """Each visible top-level entry of the output folder, oldest write first."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.startswith("."):
            continue
        measured = measure(folder / name)
        if measured is not None:
            found.append(Entry(name, folder / name, *measured))
    return sorted(found, key=lambda entry: (entry.at, entry.name))


def temp_files(folders: list[Path], shown_from: Path) -> list[Entry]:
    """Every file under the temp `folders` (named relative to `shown_from`), oldest first."""
    found = []
    for folder in folders:
        for root, _dirs, files in os.walk(folder):
            for name in files:
                path = Path(root) / name
                measured = measure(path)
                if measured is not None:
                    found.append(Entry(_shown(path, shown_from), path, *measured))
    return sorted(found, key=lambda entry: (entry.at, entry.name))


def measure(path: Path) -> tuple[int, float] | None:
    """(bytes, newest write) of a file or of a folder and all it holds; None when it is gone
    or is a link (links are never followed or removed)."""
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return None
    if path.is_symlink():
        return None
    if not path.is_dir():
        return stat.st_size, stat.st_mtime
    size, newest = 0, stat.st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                each = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            newest = max(newest, each.st_mtime)
            if name in files:
                size += each.st_size
    return size, newest


def remove_unchanged(entry: Entry) -> bool:
    """Remove the entry if nothing in it was written since it was listed; True when it went."""
    aside = entry.path.with_name(f"{REMOVING}{entry.path.name}")
    try:
        os.rename(entry.path, aside)
    except FileNotFoundError:
        return False
    measured = measure(aside)
    if measured is not None and measured[1] > entry.at:
        try:  # written meanwhile: it stays, unless a writer made a fresh one under its name
            os.rename(aside, entry.path) if aside.is_dir() else os.replace(aside, entry.path)
            return False
        except OSError:
            pass
    delete(aside)
    return True


def leftovers(folder: Path) -> list[Path]:
    """Entries whose removal was cut short (a crash between renaming and deleting)."""
    try:
        return [folder / n for n in sorted(os.listdir(folder)) if n.startswith(REMOVING)]
    except FileNotFoundError:
        return []


def delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _shown(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
