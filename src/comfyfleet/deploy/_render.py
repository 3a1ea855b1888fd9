"""The export targets by name, and writing their files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from comfyfleet.deploy._compose import compose_files
from comfyfleet.deploy._docker import docker_files
from comfyfleet.deploy._errors import DeployError
from comfyfleet.deploy._hosts import supervisord_files, systemd_files
from comfyfleet.deploy._k8s import k8s_files
from comfyfleet.deploy._model import Deployment, Rendered

_RENDERERS: dict[str, Callable[[Deployment], Rendered]] = {
    "docker": docker_files,
    "compose": compose_files,
    "systemd": systemd_files,
    "supervisord": supervisord_files,
    "k8s": k8s_files,
}
TARGETS = tuple(_RENDERERS)
"""Every export target, in the order `all` writes them."""
ALL = "all"


def check_target(target: str) -> tuple[str, ...]:
    """The targets a name stands for (`all`: every one), or an error naming the supported ones."""
    if target == ALL:
        return TARGETS
    if target not in _RENDERERS:
        raise DeployError(
            f"unknown export target '{target}'",
            hint=f"supported: {', '.join(TARGETS)}, or {ALL} for every one",
        )
    return (target,)


def render(target: str, deployment: Deployment) -> Rendered:
    """The files of one target for `deployment`."""
    if target == ALL:
        raise DeployError(f"'{ALL}' is several targets: render them one by one")
    check_target(target)
    return _RENDERERS[target](deployment)


def write_files(files: dict[str, str], folder: Path) -> list[Path]:
    """Write `files` under `folder` (made if missing), each replaced whole: a file is never
    left half-written, so a deployment never reads one."""
    written = []
    for name, text in files.items():
        path = folder / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise DeployError(f"cannot write {path}: {exc.strerror or exc}") from exc
        written.append(path)
    return written
