"""Added latency of the gateway: the same trivial graph straight to ComfyUI vs through
`POST /v1/jobs?wait=true`, interleaved in one run on the same instance.

  direct:  POST /prompt + WebSocket until execution_success + /history + GET /view of the file
  gateway: POST /v1/jobs?wait=true + GET /v1/outputs/... of the file
  inline:  POST /v1/jobs?wait=true&inline=true (the file comes base64 in the answer)
  s3:      POST /v1/jobs?wait=true with the output stored in S3 (a moto server on loopback) +
           GET of the presigned URL; the upload time, as the server measured it, is taken out
           of the added latency and reported on its own line.
Goal: added p50 <= 2 ms for each mode.

Usage: python bench/overhead.py [--n 200] [--modes gateway,inline,s3] [--workspace WS]
(default workspace: the test suite's cached install, shared into a scratch workspace)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import installed_workspace, workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config
from tests.storage_servers import moto_s3_server

from comfyfleet.comfy import ComfyClient, ComfyEvents, ComfyMessage

Timed = tuple[float, float, float]
"""(seconds end to end, of that spent uploading to S3, of that spent fetching the file)."""


async def direct_once(client: ComfyClient, events: ComfyEvents, seed: int) -> Timed:
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
    fetch = time.perf_counter()
    await client.view(image["filename"], image["subfolder"], image["type"])
    done = time.perf_counter()
    return done - started, 0.0, done - fetch


async def _submit(http: httpx.AsyncClient, body: dict[str, Any], **params: str) -> dict[str, Any]:
    answer = await http.post("/v1/jobs", params={"wait": "true", **params}, json=body)
    job: dict[str, Any] = answer.json()
    assert job["status"] == "succeeded", job
    return job


async def gateway_once(http: httpx.AsyncClient, seed: int) -> Timed:
    started = time.perf_counter()
    job = await _submit(http, {"workflow": model_free_graph(seed, "gw")})
    fetch = time.perf_counter()
    (await http.get(job["outputs"][0]["url"])).raise_for_status()
    done = time.perf_counter()
    return done - started, 0.0, done - fetch


async def inline_once(http: httpx.AsyncClient, seed: int) -> Timed:
    started = time.perf_counter()
    job = await _submit(http, {"workflow": model_free_graph(seed, "in")}, inline="true")
    assert job["outputs"][0]["base64"]
    return time.perf_counter() - started, 0.0, 0.0


async def s3_once(http: httpx.AsyncClient, seed: int, plain: httpx.AsyncClient) -> Timed:
    started = time.perf_counter()
    job = await _submit(http, {"workflow": model_free_graph(seed, "s3"), "storage": "s3"})
    output = job["outputs"][0]
    fetch = time.perf_counter()
    (await plain.get(output["url"])).raise_for_status()
    done = time.perf_counter()
    return done - started, float(output.get("store_s", 0.0)), done - fetch


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def measure(server: Server, n: int, modes: list[str]) -> None:
    port = server.http.get("/v1/instances").json()["instances"][0]["port"]
    base = f"http://127.0.0.1:{port}"
    results: dict[str, list[Timed]] = {name: [] for name in ["direct", *modes]}
    seed = time.time_ns() % 1_000_000
    async with (
        ComfyClient(base) as client,
        ComfyEvents(base, "bench-direct") as events,
        httpx.AsyncClient(base_url=server.url, timeout=60, trust_env=False) as http,
        httpx.AsyncClient(timeout=60, trust_env=False) as plain,
    ):
        runners: dict[str, Callable[[int], Awaitable[Timed]]] = {
            "direct": lambda s: direct_once(client, events, s),
            "gateway": lambda s: gateway_once(http, s),
            "inline": lambda s: inline_once(http, s),
            "s3": lambda s: s3_once(http, s, plain),
        }
        async for _item in events:  # wait for the socket before timing anything
            break
        for round_ in range(n + 5):
            for offset, name in enumerate(results):
                timed = await runners[name](seed + 10 * round_ + offset)
                if round_ >= 5:  # the first rounds warm caches and connections up
                    results[name].append(timed)
    _report(results, n)


def _report(results: dict[str, list[Timed]], n: int) -> None:
    """Each mode against direct. The S3 mode's upload and its download from the S3 server are
    not the gateway's work: both are taken out, and so is direct's own file fetch (the two
    fetch the same bytes from different servers), and each is printed on its own line."""
    direct = [total for total, _, _ in results["direct"]]
    direct_core = [total - fetch for total, _, fetch in results["direct"]]
    d50 = statistics.median(direct) * 1000
    print(f"n={n} interleaved, one CPU instance")
    print(f"direct ComfyUI    : p50 {d50:7.2f} ms   p95 {_pct(direct, 0.95):7.2f} ms")
    for name, timed in results.items():
        if name == "direct":
            continue
        if name == "s3":
            totals = [total - upload - fetch for total, upload, fetch in timed]
            base = statistics.median(direct_core) * 1000
        else:
            totals = [total for total, _, _ in timed]
            base = d50
        g50 = statistics.median(totals) * 1000
        print(
            f"via gateway {name:<7}: p50 {g50:7.2f} ms   p95 {_pct(totals, 0.95):7.2f} ms   "
            f"added p50 {g50 - base:+6.2f} ms (goal <= 2 ms)"
        )
        if name == "s3":
            uploads = statistics.median(u for _, u, _ in timed) * 1000
            fetches = statistics.median(f for _, _, f in timed) * 1000
            own = statistics.median(f for _, _, f in results["direct"]) * 1000
            print(
                f"  taken out: upload to S3 p50 {uploads:.2f} ms, GET of the presigned URL "
                f"p50 {fetches:.2f} ms (direct's own GET /view p50 {own:.2f} ms)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--modes", default="gateway,inline,s3")
    parser.add_argument("--workspace", type=Path)
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    ws = args.workspace or workspace_sharing(
        installed_workspace(), Path(tempfile.mkdtemp(prefix="cf-bench-"))
    )
    with contextlib.ExitStack() as stack:
        extra: dict[str, Any] = {}
        if "s3" in modes:
            s3 = stack.enter_context(moto_s3_server())
            bucket = s3.create_bucket("bench")
            extra["storage_targets"] = {
                "s3": {
                    "url": f"s3://{bucket}/out",
                    "endpoint_url": s3.endpoint_url,
                    "region": s3.region,
                    "access_key_id": s3.access_key_id,
                    "secret_access_key": s3.secret_access_key,
                    "addressing_style": "path",
                }
            }
        serve_config(ws, **extra)
        server = Server(ws, instances=1).start()
        stack.callback(server.close)
        asyncio.run(measure(server, args.n, modes))


if __name__ == "__main__":
    main()
