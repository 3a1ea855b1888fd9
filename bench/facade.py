"""The ComfyUI API on the fleet against the same client on a bare ComfyUI, in one run.

  latency:    one client (WebSocket open before it submits, POST /prompt with its client id,
              outputs from `executed`, done at `execution_success`, then GET /view) runs the
              trivial graph against the gateway and against one of its instances directly,
              interleaved, `--n` rounds; the output folder is emptied between rounds.
              Goal: added p50 <= 1 ms.
  throughput: `--jobs` FleetSleep prompts of `--sleep` seconds submitted at once through the
              gateway (2 instances) and straight to one instance; prompts/s of each and their
              ratio. Goal: >= 1.9.

Usage: python bench/facade.py [--n 150] [--jobs 40] [--sleep 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.comfyui_env import installed_workspace, workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config, sleep_graph

from direct_client import Direct
from overhead import _empty


async def latency(server: Server, direct_url: str, n: int) -> None:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        fleet = await Direct.open(server.url, http)
        bare = await Direct.open(direct_url, http)
        times: dict[str, list[float]] = {"bare": [], "fleet": []}
        seed = time.time_ns() % 1_000_000
        try:
            for round_ in range(n + 5):
                for offset, (name, client) in enumerate((("bare", bare), ("fleet", fleet))):
                    took, _, _ = await client.run(model_free_graph(seed + 10 * round_ + offset))
                    if round_ >= 5:
                        times[name].append(took * 1000)
                _empty(server.ws / "output")
        finally:
            await fleet.close()
            await bare.close()
    base = statistics.median(times["bare"])
    for name, values in times.items():
        values.sort()
        p95 = values[int(len(values) * 0.95) - 1]
        print(f"{name:6s} p50 {statistics.median(values):7.2f} ms  p95 {p95:7.2f} ms")
    added = statistics.median(times["fleet"]) - base
    print(f"added p50 {added:+.2f} ms (goal <= 1 ms)")


async def throughput(server: Server, direct_url: str, jobs: int, sleep_s: float) -> None:
    rates = {}
    async with httpx.AsyncClient(timeout=120, trust_env=False) as http:
        for name, url in (("one instance", direct_url), ("fleet of 2", server.url)):
            client = await Direct.open(url, http)
            seed = time.time_ns() % 1_000_000
            try:
                started = time.perf_counter()
                await asyncio.gather(
                    *(client.run(sleep_graph(sleep_s, seed + i), fetch=False) for i in range(jobs))
                )
                took = time.perf_counter() - started
            finally:
                await client.close()
            rates[name] = jobs / took
            print(f"{name:12s} {jobs} prompts in {took:6.2f} s: {rates[name]:6.2f} prompts/s")
    ratio = rates["fleet of 2"] / rates["one instance"]
    print(f"fleet / one instance: {ratio:.2f}x (goal >= 1.9)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = workspace_sharing(installed_workspace(), Path(tmp) / "ws")
        serve_config(ws)
        server = Server(ws, instances=2).start()
        try:
            instances = server.http.get("/v1/instances").json()["instances"]
            direct_url = min(instances, key=lambda i: i["index"])["base_url"]
            asyncio.run(latency(server, direct_url, args.n))
            asyncio.run(throughput(server, direct_url, args.jobs, args.sleep))
        finally:
            server.close()


if __name__ == "__main__":
    main()
