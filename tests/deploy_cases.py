"""Deployments the deploy tests render: the committed default one, and a custom one that sets
what the files carry (ports, store, output store, auth, GPUs, nodes) and holds a secret in
every place a setting can hold one."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

import pytest

from comfyfleet.config import Settings
from comfyfleet.deploy import TARGETS, Deployment, render

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "deploy"
"""The files of the default configuration, kept in the repository."""

REFERENCE_WORKSPACE = "/var/lib/comfyfleet"
REFERENCE_EXECUTABLE = "/opt/comfyfleet/bin/comfyfleet"
REFERENCE_USER = "comfyfleet"
REFERENCE_EXPORT = [
    "export",
    "all",
    "--out",
    "deploy",
    "--workspace",
    REFERENCE_WORKSPACE,
    "--executable",
    REFERENCE_EXECUTABLE,
    "--service-user",
    REFERENCE_USER,
]
"""The command (run from the repository root, with no settings file and no COMFYFLEET_*
variable) that writes the committed files."""

SECRETS = {
    "api key": "sentinel-api-key-0123456789abcdef0123",
    "session secret": "sentinel-session-secret-0123456789abcdef",
    "webhook secret": "sentinel-webhook-secret-0123456789",
    "store password": "sentinelPgPassword42",
    "s3 secret": "sentinel-s3-secret-key",
    "azure": "sentinel-azure-connection-string",
    "header": "Bearer sentinel-http-header-token",
    "torch mirror password": "sentinelMirrorPassword",
}
"""Every secret the custom settings hold: none may appear in any generated file."""


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No COMFYFLEET_* variable of the machine running the tests leaks into the settings."""
    for name in list(os.environ):
        if name.upper().startswith("COMFYFLEET_"):
            monkeypatch.delenv(name)


def custom_settings(root: Path) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    nodes = root / "nodes.yaml"
    nodes.write_text(
        "nodes:\n  - git: https://example.test/org/some-nodes\n    ref: v1.4.0\n",
        encoding="utf-8",
    )
    return Settings.model_validate(
        {
            "workspace": root / "srv" / "comfy fleet",
            "models_root": root / "models",
            "install": {
                "torch": "cu126",
                "nodes_file": nodes,
                "torch_index_url": f"https://mirror:{SECRETS['torch mirror password']}@m.test/whl",
            },
            "fleet": {"gpus": "0,1", "stop_grace_s": 40, "startup_timeout_s": 240},
            "serve": {
                "host": "0.0.0.0",
                "port": 9090,
                "store": f"postgresql://fleet:{SECRETS['store password']}@db.test:5432/jobs",
                "max_queued": 50,
            },
            "auth": {
                "enabled": True,
                "api_key": SECRETS["api key"],
                "session_secret": SECRETS["session secret"],
            },
            "webhooks": {"secret": SECRETS["webhook secret"]},
            "storage": {
                "url": "s3://outputs-bucket/jobs",
                "endpoint_url": "https://s3.example.test",
                "access_key_id": "AKIAEXAMPLEKEYID",
                "secret_access_key": SECRETS["s3 secret"],
            },
            "storage_targets": {
                "archive": {
                    "url": "az://archive-container",
                    "azure_connection_string": SECRETS["azure"],
                },
                "push": {
                    "url": "https://push.example.test/out/",
                    "http_headers": {"Authorization": SECRETS["header"]},
                },
            },
        }
    )


def custom_deployment(root: Path, executable: Path, user: str) -> Deployment:
    return Deployment(
        custom_settings(root), variant="full", executable=executable, service_user=user
    )


def render_all(deployment: Deployment) -> dict[str, dict[str, str]]:
    """Every target's files: target -> file name -> text."""
    return {target: render(target, deployment).files for target in TARGETS}


def committed_files() -> dict[str, dict[str, str]]:
    """The committed files, in the same shape as :func:`render_all`."""
    return {
        target: {
            path.name: path.read_text(encoding="utf-8")
            for path in sorted((COMMITTED / target).iterdir())
            if path.is_file()
        }
        for target in TARGETS
    }


@dataclass(frozen=True)
class Case:
    name: str
    files: dict[str, dict[str, str]]
    workspace: str
    user: str


CASES = ["committed", "custom"]


def make_case(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    """The files of one case: the committed default ones, or the custom deployment's, rendered
    with a real service user and a comfyfleet command and logs folder that exist."""
    if name == "committed":
        return Case("committed", committed_files(), REFERENCE_WORKSPACE, REFERENCE_USER)
    clean_environment(monkeypatch)
    executable = tmp_path / "bin" / "comfyfleet"
    executable.parent.mkdir()
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    user = pwd.getpwuid(os.getuid()).pw_name
    deployment = custom_deployment(tmp_path / "custom", executable, user)
    (deployment.settings.workspace / "logs").mkdir(parents=True)
    return Case("custom", render_all(deployment), str(deployment.settings.workspace), user)
