"""A long mixed load on a real `comfyfleet serve` (2 CPU instances), with random `kill -9` of
instances and of the server itself, reporting what users of a service care about over time.

Load (`--clients` loops, each submitting one job at a time, asynchronously, then following it):
  trivial   an image made and inverted (no model)          expected: succeeded
  sleep     a FleetSleep of 0.3-2 s                        expected: succeeded
  sd15      the tiny SD1.5 txt2img, 4 steps at 64 px       expected: succeeded
  failing   a FleetFail node                               expected: failed, naming the node
  upload    an uploaded PNG through LoadImage              expected: succeeded
  cancel    a FleetSleep of 30 s, cancelled once running   expected: cancelled
Every job asks for a signed webhook on `job.succeeded`, `job.failed` and `job.cancelled`, sent
to a receiver in this process that checks each signature.

Chaos: every `--kill-every` seconds (randomised +-50%) an instance's ComfyUI gets SIGKILL; every
`--server-kill-every` seconds the server gets SIGKILL and is started again on the same
workspace and port (the clients retry their calls meanwhile).

Reported at the end:
  lost jobs:  accepted (202) but not in the store, or not in the state their kind must end in
              (goal 0);
  repeated deliveries: a webhook-id received more than once (a sender killed between the
              receiver's answer and recording it sends it again, under the same id: Standard
              Webhooks receivers drop it), and events delivered under two ids (goal 0);
  missing deliveries: a finished job without its final webhook (goal 0);
  latency p50/p99 of the trivial jobs (submit to final status), per `--window` seconds (drift);
  RSS of the server and of each instance, sampled every 10 s, per window (goal: flat after
              warm-up).

Usage: python bench/soak.py [--minutes 20] [--clients 6] [--kill-every 90]
       [--server-kill-every 300] [--window 300]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import free_port_block, installed_workspace, workspace_sharing
from tests.integration.serve import Server, model_free_graph, serve_config, sleep_graph
from tests.integration.test_serve_webhooks import Receiver
from tests.tiny_model import tiny_checkpoint, tiny_sd15_graph

from comfyfleet.webhooks import generate_secret

KINDS = {"trivial": 40, "sleep": 20, "sd15": 10, "failing": 10, "upload": 10, "cancel": 10}
EXPECTED = {"failing": "failed", "cancel": "cancelled"}
HOOK_EVENTS = ["job.succeeded", "job.failed", "job.cancelled"]


@dataclass
class Record:
    kind: str
    submitted_at: float
    ended_at: float | None = None


@dataclass
class Soak:
    server: Server
    receiver: Receiver
    started: float = field(default_factory=time.monotonic)
    jobs: dict[str, Record] = field(default_factory=dict)
    rss: list[tuple[float, str, float]] = field(default_factory=list)
    server_kills: int = 0
    instance_kills: int = 0
    down: asyncio.Event = field(default_factory=asyncio.Event)

    def hook(self) -> dict[str, Any]:
        return {"url": f"http://127.0.0.1:{self.receiver.port}/hook", "events": HOOK_EVENTS}


def _png() -> str:
    """A tiny PNG (8x8 grey) as base64, made without Pillow."""
    import struct
    import zlib

    raw = b"".join(b"\x00" + b"\x80" * 8 for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
    return base64.b64encode(png + chunk(b"IEND", b"")).decode()


def graph_for(kind: str, seed: int, checkpoint: str, png: str) -> dict[str, Any]:
    if kind == "trivial":
        return model_free_graph(seed, "soak")
    if kind == "sleep":
        return sleep_graph(random.uniform(0.3, 2.0), seed)
    if kind == "sd15":
        return tiny_sd15_graph(checkpoint, seed=seed, steps=4, size=64, prefix="soak-sd")
    if kind == "failing":
        fail = {"class_type": "FleetFail", "inputs": {"message": f"soak {seed}", "seed": seed}}
        return model_free_graph(seed, "soak-fail") | {"4": fail}
    if kind == "upload":
        load = {"class_type": "LoadImage", "inputs": {"image": f"data:image/png;base64,{png}"}}
        save = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "up"}}
        return {"1": load, "2": save}
    return sleep_graph(30.0, seed)  # cancel


async def call(soak: Soak, http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
    """One API call, retried while the server is down (killed and restarting)."""
    while True:
        try:
            answer = await http.request(method, soak.server.url + url, **kw)
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if answer.status_code in (429, 502, 503):
            await asyncio.sleep(0.5)
            continue
        return answer


async def client(soak: Soak, deadline: float, checkpoint: str, png: str) -> None:
    weights = list(KINDS.values())
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        while time.monotonic() < deadline:
            kind = random.choices(list(KINDS), weights)[0]
            seed = random.randrange(1 << 40)
            body = {"workflow": graph_for(kind, seed, checkpoint, png), "webhook": soak.hook()}
            body["id"] = f"soak-{kind}-{seed:x}"
            at = time.monotonic()
            answer = await call(soak, http, "POST", "/v1/jobs", json=body)
            if answer.status_code not in (200, 202):  # 200: a replay of a finished one
                print(f"unexpected {answer.status_code}: {answer.text[:200]}", flush=True)
                continue
            job_id = answer.json()["id"]
            record = soak.jobs.setdefault(job_id, Record(kind, at))
            await follow(soak, http, job_id, kind, record)


async def follow(soak: Soak, http: httpx.AsyncClient, job_id: str, kind: str, r: Record) -> None:
    cancelled = False
    while True:
        job = (await call(soak, http, "GET", f"/v1/jobs/{job_id}")).json()
        status = job.get("status")
        if status in ("succeeded", "failed", "cancelled"):
            r.ended_at = time.monotonic()
            return
        if kind == "cancel" and status == "running" and not cancelled:
            await call(soak, http, "POST", f"/v1/jobs/{job_id}/cancel")
            cancelled = True
        await asyncio.sleep(0.05 if kind == "trivial" else 0.2)


async def chaos(soak: Soak, deadline: float, kill_every: float, server_every: float) -> None:
    next_kill = time.monotonic() + kill_every * random.uniform(0.5, 1.5)
    next_server = time.monotonic() + server_every * random.uniform(0.5, 1.5)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        while time.monotonic() < deadline - 30:
            await asyncio.sleep(1)
            now = time.monotonic()
            if now >= next_server:
                next_server = now + server_every * random.uniform(0.5, 1.5)
                await asyncio.to_thread(restart_server, soak)
            elif now >= next_kill:
                next_kill = now + kill_every * random.uniform(0.5, 1.5)
                with contextlib.suppress(httpx.HTTPError, psutil.Error, KeyError):
                    listed = (await http.get(soak.server.url + "/v1/instances")).json()
                    pids = [i["pid"] for i in listed["instances"] if i.get("pid")]
                    if pids:
                        psutil.Process(random.choice(pids)).send_signal(signal.SIGKILL)
                        soak.instance_kills += 1


def restart_server(soak: Soak) -> None:
    soak.server.stop(signal.SIGKILL)
    soak.server_kills += 1
    for child in psutil.process_iter(["cmdline"]):  # its ComfyUI children, orphaned by the kill
        with contextlib.suppress(psutil.Error):
            if str(soak.server.ws) in " ".join(child.info["cmdline"] or []):
                child.kill()
    soak.server.start(timeout=300)


async def sample_rss(soak: Soak, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error, AttributeError):
            assert soak.server.proc is not None
            main = psutil.Process(soak.server.proc.pid)
            at = time.monotonic() - soak.started
            soak.rss.append((at, "server", main.memory_info().rss / 2**20))
            for n, child in enumerate(main.children(recursive=True)):
                soak.rss.append((at, f"instance {n}", child.memory_info().rss / 2**20))
        await asyncio.sleep(10)


def report(soak: Soak, window: float) -> None:
    http = soak.server.http
    finals = {job_id: http.get(f"/v1/jobs/{job_id}").json() for job_id in soak.jobs}
    lost = [
        (job_id, r.kind, finals[job_id].get("status"))
        for job_id, r in soak.jobs.items()
        if finals[job_id].get("status") != EXPECTED.get(r.kind, "succeeded")
    ]
    kinds = dict(Counter(r.kind for r in soak.jobs.values()))
    print(f"\njobs accepted: {len(soak.jobs)}  by kind: {kinds}")
    print(f"kills: {soak.instance_kills} instances, {soak.server_kills} servers")
    print(f"lost or wrong final state: {len(lost)} (goal 0) {lost[:5]}")
    repeats = sum(n - 1 for n in Counter(soak.receiver.ids).values() if n > 1)
    ids_per_event: dict[tuple[str, int], set[str]] = defaultdict(set)
    ended: set[str] = set()
    for webhook_id, payload in zip(soak.receiver.ids, soak.receiver.received, strict=True):
        data = payload["data"]
        ids_per_event[(data["id"], data["event"]["seq"])].add(webhook_id)
        ended.add(data["id"])
    doubled = sum(1 for ids in ids_per_event.values() if len(ids) > 1)
    print(f"webhook-ids received again (sender killed mid-delivery): {repeats}")
    print(f"events delivered under two ids: {doubled} (goal 0)")
    print(f"finished jobs without their final webhook: {len(set(soak.jobs) - ended)} (goal 0)")
    print(f"\ntrivial jobs, submit to final status, per {window:.0f} s window (ms):")
    by_window: dict[int, list[float]] = defaultdict(list)
    for r in soak.jobs.values():
        if r.kind == "trivial" and r.ended_at is not None:
            by_window[int((r.submitted_at - soak.started) // window)].append(
                (r.ended_at - r.submitted_at) * 1000
            )
    for w, values in sorted(by_window.items()):
        values.sort()
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        p50 = statistics.median(values)
        print(f"  {w * window / 60:5.0f} min  n={len(values):4d}  p50 {p50:7.1f}  p99 {p99:7.1f}")
    print("\nRSS per window, MB (median of the samples):")
    rss: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for at, who, mb in soak.rss:
        rss[who][int(at // window)].append(mb)
    for who, windows in sorted(rss.items()):
        cells = "  ".join(f"{statistics.median(v):6.0f}" for _, v in sorted(windows.items()))
        print(f"  {who:12s} {cells}")


async def main(args: argparse.Namespace) -> None:
    installed = installed_workspace()
    checkpoint = tiny_checkpoint(installed)
    secret = generate_secret()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        ws = workspace_sharing(installed, Path(tmp) / "ws")
        serve_config(
            ws,
            models_root=str(installed / "models"),
            fleet={"probe_interval_s": 0.5, "backoff_initial_s": 0.5, "startup_timeout_s": 120},
            webhooks={"secret": secret, "allow_private_targets": True, "poll_s": 0.5},
        )
        receiver = Receiver(free_port_block(1), secret)
        receiver.start()
        server = Server(ws, instances=2).start(timeout=300)
        soak = Soak(server, receiver)
        deadline = time.monotonic() + args.minutes * 60
        png = _png()
        print(f"soak for {args.minutes} min, {args.clients} clients", flush=True)
        try:
            await asyncio.gather(
                *(client(soak, deadline, checkpoint, png) for _ in range(args.clients)),
                chaos(soak, deadline, args.kill_every, args.server_kill_every),
                sample_rss(soak, deadline),
            )
            # Let pending webhooks go out before counting them.
            await asyncio.sleep(15)
            report(soak, args.window)
        finally:
            server.close()
            receiver.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--kill-every", type=float, default=90)
    parser.add_argument("--server-kill-every", type=float, default=300)
    parser.add_argument("--window", type=float, default=300)
    asyncio.run(main(parser.parse_args()))
