"""What the third-party ComfyUI client tests share: a bare ComfyUI started outside comfyfleet,
the target a client is pointed at (that bare ComfyUI, or the fleet's gateway), and the graphs
and images the clients send, shaped the way a user exports them from the editor."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.comfyui_env import free_port_block
from tests.integration.serve import model_free_graph


@dataclass(frozen=True)
class Target:
    """Where a client is pointed: `url` is `http://host:port`, `address` is `host:port` (the
    form some clients take)."""

    name: str
    url: str
    instances: int
    """How many prompts can run at once behind `url` (one per ComfyUI)."""

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[1]


TEST_NODES = "comfyfleet-test-nodes"


class BareComfy:
    """One real ComfyUI 0.3.75 from the cached install, started with ComfyUI's own command line:
    no comfyfleet in front of it, its own base directory (input, output, temp, user), an
    in-memory database, and of custom nodes only the project's test nodes (for FleetSleep)."""

    def __init__(self, install: Path, base: Path) -> None:
        self.install, self.base = install, base
        self.port = free_port_block(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> BareComfy:
        nodes = self.base / "custom_nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        (nodes / TEST_NODES).symlink_to(
            self.install / "custom_nodes" / TEST_NODES, target_is_directory=True
        )
        with (self.base / "comfyui.out").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.install / "venv" / "bin" / "python"),
                    "main.py",
                    "--cpu",
                    "--listen",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--base-directory",
                    str(self.base),
                    "--database-url",
                    "sqlite:///:memory:",
                    "--disable-auto-launch",
                    "--dont-print-server",
                ],
                cwd=self.install / "comfyui",
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ComfyUI exited: {self.log()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/system_stats", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise AssertionError(f"ComfyUI not ready in {timeout}s: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)

    def log(self) -> str:
        return (self.base / "comfyui.out").read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def bare_comfy(install: Path, base: Path) -> Iterator[BareComfy]:
    comfy = BareComfy(install, base)
    try:
        yield comfy.start()
    finally:
        comfy.stop()


_last_seed = 0


def fresh_seed() -> int:
    """A seed no earlier prompt of this run used (ComfyUI caches an identical prompt)."""
    global _last_seed
    _last_seed = max(_last_seed + 1, time.time_ns() % 0xFFFFFF)
    return _last_seed


TITLES = {
    "EmptyImage": "Empty Image",
    "LoadImage": "Load Image",
    "ImageInvert": "Invert Image",
    "SaveImage": "Save Image",
}


def exported(graph: dict[str, Any]) -> dict[str, Any]:
    """`graph` as the editor's "Export (API)" writes it: every node carries `_meta.title`."""
    return {
        node_id: {**node, "_meta": {"title": TITLES[node["class_type"]]}}
        for node_id, node in graph.items()
    }


def model_free_workflow(seed: int, prefix: str) -> dict[str, Any]:
    """EmptyImage (32x32, colour from the seed) -> ImageInvert -> SaveImage, as exported."""
    return exported(model_free_graph(seed, prefix))


def load_image_workflow(image: str, prefix: str) -> dict[str, Any]:
    """LoadImage of an uploaded input (`subfolder/name` or `name`) -> ImageInvert -> SaveImage."""
    return exported(
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {
                "class_type": "SaveImage",
                "inputs": {"images": ["2", 0], "filename_prefix": prefix},
            },
        }
    )


def write_workflow(path: Path, workflow: dict[str, Any]) -> Path:
    """A workflow file, as the clients that load workflows from disk expect one."""
    path.write_text(json.dumps(workflow, indent=2), encoding="utf-8")
    return path


def occupy(target: Target, seconds: float) -> None:
    """Keep every ComfyUI behind `target` busy for `seconds` (a FleetSleep prompt each, sent
    with a client id of their own), so that a prompt sent next waits in the queue: a client
    that connects its WebSocket after its POST then finds its prompt pending and takes its
    live path (queue position, then the execution messages) rather than finding it done."""
    for _ in range(target.instances):
        prompt = {
            "1": {"class_type": "FleetSleep", "inputs": {"seconds": seconds, "seed": fresh_seed()}}
        }
        answer = httpx.post(
            f"{target.url}/prompt", json={"prompt": prompt, "client_id": "occupier"}, timeout=30
        )
        assert answer.status_code == 200, answer.text


UPLOAD_SIZE = (40, 24)
"""The size of uploaded images: not 32x32, so the output's size proves LoadImage read it."""


def sample_image(seed: int, size: tuple[int, int] = UPLOAD_SIZE) -> Image.Image:
    return Image.new("RGB", size, (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
