"""A real diffusion graph (CLIP, KSampler, VAE decode) on a real instance, followed live.

The tiny random SD1.5 checkpoint makes this run on CPU in seconds; the point is ComfyUI's event
stream for a sampler (progress per step, previews, executed, success) as ComfyEvents sees it,
and an image that comes back through /view.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfyfleet.comfy import ComfyClient, ComfyEvents, ComfyMessage, Connected, PreviewFrame
from tests.comfyui_env import free_port_block, workspace_sharing
from tests.integration.fleet import cli, status
from tests.tiny_model import KSAMPLER_NODE, SAVE_NODE, tiny_checkpoint, tiny_sd15_graph

pytestmark = pytest.mark.comfyui

STEPS = 4
SIZE = 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ws(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace of its own whose models_root is the installed one (with the checkpoint)."""
    tiny_checkpoint(comfyui_install)
    workspace = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("ws"))
    settings = {
        "models_root": str(comfyui_install / "models"),
        "fleet": {
            "probe_interval_s": 0.2,
            "startup_timeout_s": 120,
            "stop_grace_s": 10,
            # Previews are off by default; latent2rgb needs no extra model and makes ComfyUI
            # send a binary preview frame per sampler step.
            "extra_args": ["--preview-method", "latent2rgb"],
        },
    }
    (workspace / "comfyfleet.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    yield workspace
    if (workspace / "state" / "supervisor.sock").exists():
        cli("down", "-w", workspace, check=False)


@dataclass
class Run:
    messages: list[ComfyMessage] = field(default_factory=list)
    previews: list[PreviewFrame] = field(default_factory=list)
    sequence: list[str] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    png: bytes = b""


async def _follow(port: int, graph: dict[str, Any]) -> Run:
    run = Run()
    base = f"http://127.0.0.1:{port}"
    client_id = uuid.uuid4().hex
    async with ComfyClient(base) as client, ComfyEvents(base, client_id) as events:
        async with asyncio.timeout(180):
            async for item in events:
                if isinstance(item, Connected):
                    break
            started = time.monotonic()
            prompt_id = await client.submit(graph, client_id=client_id)
            async for item in events:
                now = time.monotonic() - started
                if isinstance(item, PreviewFrame):
                    run.previews.append(item)
                    run.sequence.append(f"preview({item.image_format})")
                    continue
                assert isinstance(item, ComfyMessage), f"stream broke: {item}"
                if item.prompt_id not in (None, prompt_id):
                    continue
                run.messages.append(item)
                run.sequence.append(_describe(item))
                run.times.setdefault(run.sequence[-1], now)
                if item.is_terminal:
                    break
        result = await client.wait(prompt_id, timeout=30)
        (image,) = [f for f in result.files() if f.node_id == SAVE_NODE]
        run.png = await client.view(image.filename, image.subfolder, image.type)
    return run


def _describe(message: ComfyMessage) -> str:
    data = message.data
    if message.type == "progress":
        return f"progress({data['node']}, {data['value']}/{data['max']})"
    if message.type in ("executing", "executed"):
        return f"{message.type}({message.node})"
    if message.type == "execution_cached":
        return f"execution_cached({data.get('nodes')})"
    if message.type == "status":
        return f"status(queue_remaining={data['status']['exec_info']['queue_remaining']})"
    return message.type


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which PNG requires to come first."""
    assert png[:8] == PNG_SIGNATURE
    length, chunk = struct.unpack(">I4s", png[8:16])
    assert (length, chunk) == (13, b"IHDR")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_a_tiny_sd15_graph_reports_every_step_and_saves_a_png(
    ws: Path, comfyui_install: Path
) -> None:
    cli("up", "-w", ws, "--instances", "1", "--base-port", str(free_port_block(1)), "--detach")
    port = status(ws)["instances"][0]["port"]
    graph = tiny_sd15_graph(
        tiny_checkpoint(comfyui_install), seed=1234, steps=STEPS, size=SIZE, prefix="tiny/sd15"
    )
    run = asyncio.run(_follow(port, graph))
    print("\n".join(["observed:", *run.sequence]))
    print({key: round(value, 2) for key, value in run.times.items()})

    types = [m.type for m in run.messages]
    assert types[-1] == "execution_success", run.sequence
    assert "execution_start" in types and types.index("execution_start") < types.index("progress")
    steps = [(m.data["value"], m.data["max"]) for m in run.messages if m.type == "progress"]
    assert [
        (m.data["value"], m.data["max"])
        for m in run.messages
        if m.type == "progress" and m.node == KSAMPLER_NODE
    ] == [(step, STEPS) for step in range(1, STEPS + 1)], steps
    executed = [m for m in run.messages if m.type == "executed"]
    assert [m.node for m in executed] == [SAVE_NODE]
    assert executed[0].data["output"]["images"][0]["filename"].startswith("sd15_")
    assert run.previews, "latent2rgb previews were asked for"
    assert all(p.data[:2] == b"\xff\xd8" or p.data[:8] == PNG_SIGNATURE for p in run.previews)
    assert _png_size(run.png) == (SIZE, SIZE)
    cli("down", "-w", ws)
