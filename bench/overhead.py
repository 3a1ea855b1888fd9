"""Added latency of the gateway: the same trivial graph straight to ComfyUI vs through
`POST /v1/jobs?wait=true`, interleaved in one run on the same instance.

  direct:  POST /prompt + WebSocket until execution_success + GET /view of the file
  gateway: POST /v1/jobs?wait=true + GET /v1/outputs/... of the file
Goal: added p50 <= 2 ms.

Usage: python bench/overhead.py [--n 200] [--workspace WS]
(default workspace: the test suite's cached install, shared into a scratch workspace)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import installed_workspace, workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config

from comfyfleet.comfy import ComfyClient, ComfyEvents, ComfyMessage


async def direct_once(client: ComfyClient, events: ComfyEvents, seed: int) -> float:
    started = time.perf_counter()
    prompt_id = uuid.uuid4().hex
    await client.submit(
        model_free_graph(seed, "direct"), client_id=events.client_id, prompt_id=prompt_id
    )
    async for item in events:
        if isinstance(item, ComfyMessage) and item.prompt_id == prompt_id and item.is_terminal:
            break
    entry = await client.history(prompt_id)
    while entry is None:  # ComfyUI files the history just after it reports success
        await asyncio.sleep(0.001)
        entry = await client.history(prompt_id)
    image = entry["outputs"]["3"]["images"][0]
    await client.view(image["filename"], image["subfolder"], image["type"])
    return time.perf_counter() - started


async def gateway_once(http: httpx.AsyncClient, seed: int) -> float:
    started = time.perf_counter()
    answer = await http.post(
        "/v1/jobs", params={"wait": "true"}, json={"workflow": model_free_graph(seed, "gw")}
    )
    job = answer.json()
    assert job["status"] == "succeeded", job
    (await http.get(job["outputs"][0]["url"])).raise_for_status()
    return time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def measure(server: Server, n: int) -> None:
    port = server.http.get("/v1/instances").json()["instances"][0]["port"]
    base = f"http://127.0.0.1:{port}"
    direct: list[float] = []
    gateway: list[float] = []
    seed = time.time_ns() % 1_000_000
    async with (
        ComfyClient(base) as client,
        ComfyEvents(base, "bench-direct") as events,
        httpx.AsyncClient(base_url=server.url, timeout=60, trust_env=False) as http,
    ):
        async for _item in events:  # wait for the socket before timing anything
            break
        for warm in range(5):
            await direct_once(client, events, seed + warm)
            await gateway_once(http, seed + 100 + warm)
        for i in range(n):
            direct.append(await direct_once(client, events, seed + 1000 + 2 * i))
            gateway.append(await gateway_once(http, seed + 1001 + 2 * i))
    d50, g50 = statistics.median(direct) * 1000, statistics.median(gateway) * 1000
    print(f"n={n} interleaved, one CPU instance")
    print(f"direct ComfyUI : p50 {d50:7.2f} ms   p95 {_pct(direct, 0.95):7.2f} ms")
    print(f"via gateway    : p50 {g50:7.2f} ms   p95 {_pct(gateway, 0.95):7.2f} ms")
    print(f"added latency  : p50 {g50 - d50:+7.2f} ms   ratio {g50 / d50:.2f} (goal: <= 2 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--workspace", type=Path)
    args = parser.parse_args()
    ws = args.workspace or workspace_sharing(
        installed_workspace(), Path(tempfile.mkdtemp(prefix="cf-bench-"))
    )
    serve_config(ws)
    server = Server(ws, instances=1).start()
    try:
        asyncio.run(measure(server, args.n))
    finally:
        server.close()


if __name__ == "__main__":
    main()
