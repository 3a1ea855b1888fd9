"""Copying, hashing and swapping whole folders, which sources and custom nodes all need."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

_SKIP_NAMES = frozenset({".git", "__pycache__", ".DS_Store"})


def _files(root: Path, skip: Iterable[str] = ()) -> list[Path]:
    """Files below `root`; `skip` names folders skipped at the top level only (a workspace's
    `models/` is not ComfyUI's own `comfy/ldm/models/`)."""
    top = frozenset(skip)
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        at_top = Path(folder) == root
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_NAMES and not (at_top and d in top))
        found.extend(Path(folder) / name for name in sorted(files) if not name.endswith(".pyc"))
    return found


def tree_sha256(root: Path, skip: Iterable[str] = ()) -> str:
    """A content hash of a folder: relative paths and file bytes, in a stable order."""
    digest = hashlib.sha256()
    for path in _files(root, skip):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def tree_signature(root: Path, skip: Iterable[str] = ()) -> str:
    """A cheap change detector (names, sizes, mtimes): enough to know a re-install is needed."""
    digest = hashlib.sha256()
    for path in _files(root, skip):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def copy_tree(src: Path, dst: Path, skip: Iterable[str] = ()) -> None:
    top = frozenset(skip)

    def ignore(folder: str, names: list[str]) -> list[str]:
        at_top = Path(folder) == src
        return [n for n in names if n in _SKIP_NAMES or (at_top and n in top)]

    shutil.copytree(src, dst, symlinks=True, ignore=ignore)


def replace_dir(new: Path, final: Path) -> None:
    """Put `new` where `final` is, so that `final` is never seen half-written."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def scratch_dir(final: Path) -> Path:
    """A fresh sibling folder to build `final` in (same filesystem, so the swap is a rename)."""
    scratch = final.with_name(final.name + ".partial")
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    return scratch
