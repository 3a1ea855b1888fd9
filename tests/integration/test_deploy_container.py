"""The image's entrypoint and health check, run as the image runs them, on a real ComfyUI.

No container engine: the installed ComfyUI of the tests stands for the image's install
(`COMFYFLEET_IMAGE_INSTALL`), an empty folder for the workspace volume. The entrypoint must make
that volume a working workspace and become `comfyfleet serve`; the generated Dockerfile's own
HEALTHCHECK command must pass once the service is ready and fail once it is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from comfyfleet.config import Settings
from comfyfleet.deploy import Deployment, render
from tests.comfyui_env import free_port_block
from tests.integration.serve import model_free_graph, serve_config


def healthcheck_command(port: int) -> list[str]:
    """The HEALTHCHECK of the Dockerfile rendered for a gateway on `port`, with the image's
    `python` being this one."""
    settings = Settings.model_validate({"workspace": "/workspace", "serve": {"port": port}})
    dockerfile = render("docker", Deployment(settings)).files["Dockerfile"]
    match = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$", dockerfile, re.M)
    assert match, "the Dockerfile has no HEALTHCHECK"
    command: list[str] = json.loads(match.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def healthy(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0


@pytest.mark.comfyui
def test_the_entrypoint_serves_from_an_empty_workspace_volume(
    comfyui_install: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "workspace"
    volume.mkdir()
    serve_config(volume)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "idempotency_secret").write_text("cd" * 32 + "\n")
    seed = tmp_path / "seed" / "vae_approx"
    seed.mkdir(parents=True)
    (seed / "taesd_decoder.pth").write_bytes(b"not a real decoder")
    port, base_port = free_port_block(1), free_port_block(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYFLEET_")}
    env.update(
        COMFYFLEET_WORKSPACE=str(volume),
        COMFYFLEET_IMAGE_INSTALL=str(comfyui_install),
        COMFYFLEET_STATE_SECRETS=str(secrets),
        COMFYFLEET_MODELS_ROOT=str(tmp_path / "models"),
        COMFYFLEET_SEED_MODELS=str(tmp_path / "seed"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    check = healthcheck_command(port)
    assert not healthy(check)
    log = tmp_path / "entrypoint.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "comfyfleet.deploy",
                "serve",
                "--port",
                str(port),
                "--base-port",
                str(base_port),
                "-n",
                "1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while not healthy(check):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "not healthy in time: " + log.read_text()
            time.sleep(0.5)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            answer = http.post(
                "/v1/jobs", params={"wait": "true"}, json={"workflow": model_free_graph(7)}
            )
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["status"] == "succeeded"
        (output,) = job["outputs"]
        assert (volume / "output" / job["id"] / output["filename"]).is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    assert code == 0, log.read_text()
    assert not healthy(check)
    assert (volume / "comfyui").resolve() == (comfyui_install / "comfyui").resolve()
    assert (volume / "state" / "idempotency_secret").read_text() == "cd" * 32 + "\n"
    assert (tmp_path / "models" / "vae_approx" / "taesd_decoder.pth").read_bytes() == (
        b"not a real decoder"
    )
