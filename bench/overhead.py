"""Added latency and throughput of the gateway against the best direct client of the same ComfyUI,
interleaved in one run.

  direct: the best client of ComfyUI alone: its WebSocket open before it submits, POST /prompt
          with its client id, the outputs taken from `executed` messages, done at
          `execution_success`, then GET /view of the file.
  sync:   POST /v1/jobs?wait=true, then GET /v1/outputs/... of the file.
  inline: POST /v1/jobs?wait=true&inline=true (the file comes base64 in the answer).
  sse:    POST /v1/jobs, GET /v1/jobs/{id}/events until the final status (the file's URL comes
          in an `output` event), then GET of the file.
  s3:     sync with the output stored in S3 (a moto server on loopback); the upload and the
          GET of the presigned URL are taken out and reported on their own line.
  burst:  `--burst` jobs at once through the gateway (each a `?wait=true` POST) against the same
          number fed straight to the same instances, round-robin, at most 2 in flight per
          instance (what the dispatcher does); jobs/s of each and their ratio.

Each round runs every latency mode once, in order, and the output folder is emptied between
rounds (ComfyUI's SaveImage lists its folder to number a file: a folder that fills up would
slow whichever side writes there). Goals: added p50 <= 2 ms for sync and SSE; burst >= 0.9.

Wall-clock figures move with whatever else the machine runs; the CPU time the `serve` process
spends per job (its own, not its ComfyUI children's) does much less, and is printed beside them:
the steadier guide when comparing two versions of the gateway.

Usage: python bench/overhead.py [--n 150] [--modes sync,inline,sse,burst] [--instances 1]
       [--store sqlite:// | postgresql://user@host:port/] [--bursts 3] [--burst 200]
A PostgreSQL URL names the server: the run creates a scratch database there and drops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import installed_workspace, workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config
from tests.postgres_server import scratch_database, with_database
from tests.storage_servers import moto_s3_server

from cpu_meters import Meters, cpu_report
from direct_client import Direct, Timed

LATENCY_MODES = ("sync", "inline", "sse", "s3")


async def _submit(http: httpx.AsyncClient, body: dict[str, Any], **params: str) -> dict[str, Any]:
    answer = await http.post("/v1/jobs", params={"wait": "true", **params}, json=body)
    job: dict[str, Any] = answer.json()
    assert job.get("status") == "succeeded", (answer.status_code, job)
    return job


async def sync_once(http: httpx.AsyncClient, seed: int) -> Timed:
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


async def sse_once(http: httpx.AsyncClient, seed: int) -> Timed:
    started = time.perf_counter()
    answer = await http.post("/v1/jobs", json={"workflow": model_free_graph(seed, "sse")})
    job_id = answer.json()["id"]
    urls: list[str] = []
    status = None
    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        async for line in stream.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["event"] == "output":
                urls.append(event["data"]["url"])
            elif event["event"] == "status" and event["data"]["status"] != "running":
                if event["data"]["status"] != "queued":
                    status = event["data"]["status"]
                    break
    assert status == "succeeded" and urls, (status, urls)
    fetch = time.perf_counter()
    (await http.get(urls[0])).raise_for_status()
    done = time.perf_counter()
    return done - started, 0.0, done - fetch


async def s3_once(http: httpx.AsyncClient, seed: int, plain: httpx.AsyncClient) -> Timed:
    started = time.perf_counter()
    job = await _submit(http, {"workflow": model_free_graph(seed, "s3"), "storage": "s3"})
    output = job["outputs"][0]
    fetch = time.perf_counter()
    (await plain.get(output["url"])).raise_for_status()
    done = time.perf_counter()
    return done - started, float(output.get("store_s", 0.0)), done - fetch


def _empty(folder: Path) -> None:
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


async def latency(
    server: Server, directs: list[Direct], n: int, modes: list[str], meters: Meters
) -> None:
    results: dict[str, list[Timed]] = {name: [] for name in ["direct", *modes]}
    cpu: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in results}
    seed = time.time_ns() % 1_000_000
    output = server.ws / "output"
    limits = httpx.Limits(max_keepalive_connections=4)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=60, trust_env=False, limits=limits) as http,
        httpx.AsyncClient(timeout=60, trust_env=False) as plain,
    ):
        runners: dict[str, Callable[[int], Awaitable[Timed]]] = {
            "direct": lambda s: directs[0].run(model_free_graph(s, "direct")),
            "sync": lambda s: sync_once(http, s),
            "inline": lambda s: inline_once(http, s),
            "sse": lambda s: sse_once(http, s),
            "s3": lambda s: s3_once(http, s, plain),
        }
        for round_ in range(n + 5):
            for offset, name in enumerate(results):
                before = meters.read()
                began = time.perf_counter()
                timed = await runners[name](seed + 10 * round_ + offset)
                if round_ >= 5:  # the first rounds warm caches and connections up
                    results[name].append(timed)
                    after = meters.read()
                    cpu[name][0] += after[0] - before[0]
                    cpu[name][1] += after[1] - before[1]
                    cpu[name][2] += time.perf_counter() - began
            _empty(output)
    _report(results, n, len(directs))
    cpu_report(cpu, n)


class _RawPost:
    """One POST on a connection of its own, opened before the clock starts. A burst needs as
    many connections as jobs (each `?wait=true` holds one), and httpx's pool spends more CPU on
    200 of them than the gateway spends on the jobs: this costs the client next to nothing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> _RawPost:
        parts = urlsplit(url)
        return cls(*await asyncio.open_connection(parts.hostname, parts.port))

    async def send(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        self.writer.write(head.encode() + data)
        answer = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", answer)
        assert answer.startswith(b"HTTP/1.1 200") and length, answer
        job: dict[str, Any] = json.loads(await self.reader.readexactly(int(length.group(1))))
        self.writer.close()
        return job


async def burst(
    server: Server, directs: list[Direct], jobs: int, rounds: int, meters: Meters
) -> None:
    """Jobs per second, through the gateway and fed directly, alternating, `rounds` each."""
    rates: dict[str, list[float]] = {"direct": [], "gateway": []}
    cpu: dict[str, list[float]] = {"direct": [0.0, 0.0, 0.0], "gateway": [0.0, 0.0, 0.0]}
    seed = time.time_ns() % 1_000_000

    async def gateway() -> float:
        posts = [await _RawPost.open(server.url) for _ in range(jobs)]
        started = time.perf_counter()
        bodies = [{"workflow": model_free_graph(seed + i, "burst")} for i in range(jobs)]
        answers = await asyncio.gather(
            *(
                post.send("/v1/jobs?wait=true", body)
                for post, body in zip(posts, bodies, strict=True)
            )
        )
        assert all(job["status"] == "succeeded" for job in answers)
        return time.perf_counter() - started

    async def direct() -> float:
        queues = [list(range(i, jobs, len(directs))) for i in range(len(directs))]

        async def feed(client: Direct, mine: list[int]) -> None:
            while mine:
                await client.run(model_free_graph(seed + mine.pop(), "burst"), fetch=False)

        started = time.perf_counter()
        await asyncio.gather(
            *(feed(c, q) for c, q in zip(directs, queues, strict=True) for _ in (0, 1))
        )
        return time.perf_counter() - started

    for _ in range(rounds):
        for name, run in (("direct", direct), ("gateway", gateway)):
            before = meters.read()
            took = await run()
            rates[name].append(jobs / took)
            after = meters.read()
            cpu[name][0] += after[0] - before[0]
            cpu[name][1] += after[1] - before[1]
            cpu[name][2] += took
            _empty(server.ws / "output")
            seed += jobs
    d, g = statistics.median(rates["direct"]), statistics.median(rates["gateway"])
    shown = {k: " ".join(f"{r:.0f}" for r in v) for k, v in rates.items()}
    print(f"burst of {jobs}, {rounds} rounds each, {len(directs)} instance(s):")
    print(f"  direct  : median {d:7.1f} jobs/s   ({shown['direct']})")
    print(f"  gateway : median {g:7.1f} jobs/s   ({shown['gateway']})")
    print(f"  ratio   : {g / d:.2f} (goal >= 0.9)")
    cpu_report(cpu, jobs * rounds)


def _ms(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def _line(label: str, values: list[float], base: float | None) -> str:
    p50 = statistics.median(values) * 1000
    low = min(values) * 1000
    text = f"{label:<12}: p50 {p50:6.2f}  p90 {_ms(values, 0.9):6.2f}  min {low:6.2f}"
    if base is not None:
        text += f"   added p50 {p50 - base:+5.2f} ms  ratio {p50 / base:4.2f}"
    return text


def _report(results: dict[str, list[Timed]], n: int, instances: int) -> None:
    """Each mode against direct. The S3 mode's upload and its download from the S3 server are
    not the gateway's work: both are taken out, and so is direct's own file fetch."""
    direct = [total for total, _, _ in results["direct"]]
    d50 = statistics.median(direct) * 1000
    print(f"n={n} interleaved rounds, {instances} CPU instance(s), times in ms")
    print(_line("direct", direct, None))
    for name, timed in results.items():
        if name == "direct":
            continue
        if name == "s3":
            core = [total - fetch for total, _, fetch in results["direct"]]
            print(_line(name, [t - u - f for t, u, f in timed], statistics.median(core) * 1000))
            uploads = statistics.median(u for _, u, _ in timed) * 1000
            print(f"  taken out: upload to S3 p50 {uploads:.2f} ms and the presigned GET")
        else:
            print(_line(name, [total for total, _, _ in timed], d50))


@contextlib.contextmanager
def _store(url: str) -> Iterator[str]:
    if url.startswith("postgresql://"):
        server = url if urlsplit(url).path.strip("/") else with_database(url, "postgres")
        with scratch_database(server) as scratch:
            yield scratch
    else:
        yield url


def _s3_settings(stack: contextlib.ExitStack) -> dict[str, Any]:
    s3 = stack.enter_context(moto_s3_server())
    bucket = s3.create_bucket("bench")
    target = {"url": f"s3://{bucket}/out", "endpoint_url": s3.endpoint_url}
    target |= {"region": s3.region, "access_key_id": s3.access_key_id}
    target |= {"secret_access_key": s3.secret_access_key, "addressing_style": "path"}
    return {"storage_targets": {"s3": target}}


async def measure(server: Server, args: argparse.Namespace, modes: list[str]) -> None:
    ports = [i["port"] for i in server.http.get("/v1/instances").json()["instances"]]
    async with httpx.AsyncClient(timeout=60, trust_env=False) as direct_http:
        directs = [await Direct.open(f"http://127.0.0.1:{p}", direct_http) for p in ports]
        meters = Meters(server, ports)
        try:
            chosen = [m for m in modes if m in LATENCY_MODES]
            if chosen:
                await latency(server, directs, args.n, chosen, meters)
            if "burst" in modes:
                await burst(server, directs, args.burst, args.bursts, meters)
        finally:
            for client in directs:
                await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--modes", default="sync,inline,sse,burst")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--store", default="sqlite://")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--workspace", type=Path)
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    ws = args.workspace or workspace_sharing(
        installed_workspace(), Path(tempfile.mkdtemp(prefix="cf-bench-"))
    )
    with contextlib.ExitStack() as stack:
        serve_config(ws, **(_s3_settings(stack) if "s3" in modes else {}))
        store = stack.enter_context(_store(args.store))
        print(f"store {store.split('://')[0]}, modes {','.join(modes)}")
        server = Server(ws, instances=args.instances, store=store).start()
        stack.callback(server.close)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(measure(server, args, modes))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed, as the gateway uses: a client on the same loop on both sides."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
