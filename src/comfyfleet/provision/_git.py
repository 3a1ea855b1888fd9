"""A shallow fetch of exactly one ref (tag, branch or commit), shared by sources and nodes."""

from __future__ import annotations

import shutil
from pathlib import Path

from comfyfleet.provision._report import InstallLog, Reporter
from comfyfleet.provision._run import CommandFailed, run_logged


def fetch_ref(
    url: str, ref: str, work: Path, *, log: InstallLog, reporter: Reporter, what: str
) -> str:
    """Check `ref` of `url` out into the empty folder `work`; returns the commit.

    `init` + `fetch --depth 1 origin REF` works for tags, branches and commit ids alike, where
    `clone --branch` takes no commit id. Raises :class:`CommandFailed` naming `what`.
    """
    git = shutil.which("git")
    if git is None:
        raise CommandFailed(f"{what}: git is not installed", tail=[])
    env = {"GIT_TERMINAL_PROMPT": "0"}
    steps = [
        [git, "init", "-q", str(work)],
        [git, "-C", str(work), "remote", "add", "origin", url],
        [git, "-C", str(work), "fetch", "-q", "--depth", "1", "origin", ref],
        [git, "-C", str(work), "checkout", "-q", "FETCH_HEAD"],
    ]
    for argv in steps:
        run_logged(argv, log=log, reporter=reporter, what=what, env=env)
    out = run_logged(
        [git, "-C", str(work), "rev-parse", "HEAD"], log=log, reporter=reporter, what=what
    )
    return out[-1].strip()
