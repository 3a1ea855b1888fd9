"""A `comfyfleet serve` set up for the dashboard's browser tests: two CPU instances, API keys on
with an admin key, the tiny SD1.5 checkpoint under the name the shipped `txt2img` template
loads, a preset served by a local file server (slowly enough to watch its progress), preview
frames on, and backoff long enough to be seen on a page."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from comfyfleet.auth import KeyStore
from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, serve_config
from tests.model_file_server import ModelFileServer, write_random_file
from tests.tiny_model import tiny_checkpoint

TEMPLATE_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
"""The file the shipped `txt2img` template loads: here, the tiny checkpoint under that name."""
PRESET = "tiny-lora"
PRESET_FILE = "tiny-style.safetensors"
PRESET_BYTES = 6 * 1024 * 1024
PRESET_BPS = 3 * 1024 * 1024
"""The file server's pace: the install takes about two seconds, long enough to watch."""
BACKOFF_S = 3.0


@dataclass
class DashboardEnv:
    server: Server
    files: ModelFileServer
    models: Path
    admin_token: str
    keys: KeyStore

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.contextmanager
def dashboard_env(installed: Path, root: Path) -> Iterator[DashboardEnv]:
    checkpoints = root / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    source = installed / "models" / "checkpoints" / tiny_checkpoint(installed)
    (checkpoints / TEMPLATE_CHECKPOINT).symlink_to(source)
    served = root / "files"
    digest = write_random_file(served / PRESET_FILE, PRESET_BYTES, seed=7)
    with ModelFileServer(served, throttle_bps=PRESET_BPS) as files:
        manifest = {
            "presets": {
                PRESET: {
                    "description": "a small LoRA from the test suite's file server",
                    "files": [
                        {
                            "source": files.url(PRESET_FILE),
                            "type": "loras",
                            "filename": PRESET_FILE,
                            "size": PRESET_BYTES,
                            "sha256": digest,
                        }
                    ],
                }
            }
        }
        (root / "manifest.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
        ws = workspace_sharing(installed, root / "ws")
        serve_config(
            ws,
            models_root=str(root / "models"),
            models={"manifests": [str(root / "manifest.yaml")]},
            auth={"enabled": True, "public_paths": ["/health", "/ready"]},
            dashboard={"refresh_s": 1.0},
        )
        fleet = yaml.safe_load((ws / "comfyfleet.yaml").read_text())["fleet"]
        fleet |= {
            "extra_args": ["--preview-method", "latent2rgb"],
            "backoff_initial_s": BACKOFF_S,
            "backoff_max_s": BACKOFF_S,
            "crash_restart_s": BACKOFF_S,
        }
        config = yaml.safe_load((ws / "comfyfleet.yaml").read_text()) | {"fleet": fleet}
        (ws / "comfyfleet.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        keys = KeyStore(ws / "state" / "api_keys.json")
        admin = keys.create("dashboard-admin", scopes=frozenset({"admin"})).token
        server = Server(ws, instances=2).start()
        server.http.headers["Authorization"] = f"Bearer {admin}"
        try:
            yield DashboardEnv(server, files, root / "models", admin, keys)
        finally:
            server.close()
