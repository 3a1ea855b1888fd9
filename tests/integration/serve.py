"""Running `comfyfleet serve` as a subprocess for the integration tests and benchmarks."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.comfyui_env import free_port_block

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (the project venv has no Pillow)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def model_free_graph(seed: int, prefix: str = "img") -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": seed % 0xFFFFFF},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def sleep_graph(seconds: float, seed: int) -> dict[str, Any]:
    """A FleetSleep (long enough to be killed or cancelled mid-run) beside an image output."""
    sleep = {"class_type": "FleetSleep", "inputs": {"seconds": seconds, "seed": seed}}
    return model_free_graph(seed, "slept") | {"4": sleep}


class Server:
    """One `comfyfleet serve` process with its base URL and an HTTP client."""

    def __init__(
        self,
        ws: Path,
        *,
        instances: int = 2,
        store: str = "sqlite://",
        port: int | None = None,
        base_port: int | None = None,
        args: tuple[str, ...] = (),
        serving: int | None = None,
    ) -> None:
        self.ws = ws
        self.instances = instances
        self.args = args
        self.serving = instances if serving is None else serving
        """How many instances must serve before `start` returns (attached ones count)."""
        self.store = store
        self.port = port or free_port_block(1)
        self.base_port = base_port or free_port_block(max(instances, 1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=120, trust_env=False)

    def start(self, timeout: float = 180) -> Server:
        log = (self.ws / "serve.out").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "comfyfleet",
                "serve",
                "-w",
                str(self.ws),
                "--port",
                str(self.port),
                "--base-port",
                str(self.base_port),
                "-n",
                str(self.instances),
                "--store",
                self.store,
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {(self.ws / 'serve.out').read_text()}")
            try:
                ready = self.http.get("/ready")
                if ready.status_code == 200 and ready.json()["instances_serving"] == self.serving:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve not ready in time")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(120)

    def close(self) -> None:
        self.stop()
        self.http.close()

    def submit(self, workflow: dict[str, Any], **params: Any) -> httpx.Response:
        query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
        return self.http.post("/v1/jobs", json={"workflow": workflow}, params=query)

    def job(self, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get(f"/v1/jobs/{job_id}").json()
        return answer

    def wait_all(self, ids: list[str], timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = [self.job(i) for i in ids]
            if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                pending = [j["id"] for j in jobs if j["status"] not in ("succeeded", "failed")]
                raise AssertionError(f"jobs not finished in {timeout}s: {pending[:5]}")
            time.sleep(0.2)


def serve_config(ws: Path, **extra: Any) -> None:
    settings = {
        "fleet": {
            "probe_interval_s": 0.2,
            "backoff_initial_s": 0.5,
            "backoff_max_s": 2.0,
            "startup_timeout_s": 120,
            "stop_grace_s": 10,
        }
    }
    settings.update(extra)
    (ws / "comfyfleet.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
