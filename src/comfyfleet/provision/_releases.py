"""`--comfyui-version latest`: the newest release tag of a git source, read from the remote.

ComfyUI tags its releases `vMAJOR.MINOR.PATCH`. Tags of any other shape (pre-releases such as
`v0.4.0-rc1`, or names that are not versions) are not releases and are never picked. The resolved
tag goes into the source (`git:URL@vX.Y.Z`), so the lock records the exact release and commit and
`install --locked` reproduces it even after newer releases appear.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import replace

from comfyfleet.errors import SourceError
from comfyfleet.provision._sources import SourceSpec

LATEST = "latest"
_RELEASE_TAG = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
_TIMEOUT_S = 60


def newest_release(tags: Iterable[str]) -> str | None:
    """The tag of the highest release among `tags` (numeric order, not text order), or None."""
    best: tuple[tuple[int, ...], str] | None = None
    for tag in tags:
        match = _RELEASE_TAG.match(tag)
        if match is None:
            continue
        key = tuple(int(part) for part in match.groups())
        if best is None or key > best[0]:
            best = (key, tag)
    return best[1] if best else None


def remote_tags(url: str) -> list[str]:
    """The tag names of the git remote `url` (`git ls-remote --tags`); a SourceError when the
    remote cannot be read."""
    git = shutil.which("git")
    if git is None:
        raise SourceError("resolving the latest ComfyUI release needs git, which is not installed")
    try:
        done = subprocess.run(
            [git, "ls-remote", "--tags", url],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"listing the tags of {url} took more than {_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceError(
            f"cannot list the tags of {url}: {reason}",
            hint="check the URL, or name a release with --comfyui-version X.Y.Z",
        )
    names = []
    for line in done.stdout.splitlines():
        _, _, ref = line.partition("\t")
        name = ref.removeprefix("refs/tags/").removesuffix("^{}")
        if name and name not in names:
            names.append(name)
    return names


def latest_release(url: str) -> str:
    """The newest release tag of `url`; a SourceError naming the remote when it has none."""
    tags = remote_tags(url)
    tag = newest_release(tags)
    if tag is None:
        found = f"{len(tags)} tags, none of them vX.Y.Z" if tags else "no tags"
        raise SourceError(
            f"git source {url} has no release to take as 'latest' ({found})",
            hint="name a release with --comfyui-version X.Y.Z, or a ref with git:URL@REF",
        )
    return tag


def pin_release(spec: SourceSpec) -> SourceSpec:
    """`spec` with its ref filled in: a git source parsed from `latest` (no ref) gets the newest
    release tag of its remote; every other source is returned as it is."""
    if spec.kind != "git" or spec.ref is not None:
        return spec
    return replace(spec, ref=latest_release(spec.location))
