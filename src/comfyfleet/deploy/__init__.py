"""Deployment files for the user's settings: a Dockerfile (variants `minimal`, `standard`,
`full`), compose files (one machine; a fleet with PostgreSQL and an S3 store), systemd units, a
supervisord program and Kubernetes manifests.

Build a :class:`Deployment` from the settings, :func:`render` a target, :func:`write_files` the
result. Secrets are never written: the files name the env files and Secrets that hold them.
`python -m comfyfleet.deploy` is the image's entrypoint (see `_container`).
"""

from __future__ import annotations

from comfyfleet.deploy._errors import DeployError
from comfyfleet.deploy._model import DEFAULT_VARIANT, VARIANTS, Deployment, Rendered
from comfyfleet.deploy._render import ALL, TARGETS, check_target, render, write_files

__all__ = [
    "ALL",
    "DEFAULT_VARIANT",
    "TARGETS",
    "VARIANTS",
    "DeployError",
    "Deployment",
    "Rendered",
    "check_target",
    "render",
    "write_files",
]
