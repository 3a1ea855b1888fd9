"""Keeping every instance busy: 2 instances, 100 FleetSleep(0.2 s) jobs submitted at once.

Two phases on the same two instances, in one run:
  gateway:  the jobs are POSTed one by one to `/v1/jobs` and the dispatcher spreads them;
  baseline: the same number of jobs POSTed straight into the instances' own queues (half each),
            ComfyUI alone with nothing between jobs but its own bookkeeping.
For each it prints achieved/ideal throughput (ideal: the jobs' sleep time spread over 2
instances; goal >= 0.95 for the gateway) and the largest idle gap of an instance between two
jobs, from ComfyUI's own timestamps (one job's execution_success to the next job's
execution_start; goal <= 5 ms), with the baseline's figures beside them.

Usage: python bench/throughput.py [--jobs 100] [--seconds 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import installed_workspace, workspace_sharing
from tests.integration.serve import Server, serve_config

from comfyfleet.comfy import ComfyClient
from comfyfleet.jobs import SqliteJobStore

Spans = dict[int, list[tuple[float, float]]]


def sleep_only(seconds: float, seed: int) -> dict[str, object]:
    return {"1": {"class_type": "FleetSleep", "inputs": {"seconds": seconds, "seed": seed}}}


async def gateway_spans(db: Path, ids: list[str]) -> Spans:
    """(start, end) per instance from the job events: ComfyUI's timestamps, in seconds."""
    store = SqliteJobStore.open(db)
    spans: Spans = defaultdict(list)
    try:
        for job_id in ids:
            events = await store.events(job_id)
            start = next((e.data for e in events if e.kind == "started"), None)
            end = next((e.data for e in events if e.data.get("status") == "succeeded"), None)
            if start and end and start.get("comfy_ts") is not None:
                spans[int(start["instance"])].append(
                    (float(start["comfy_ts"]) / 1000, float(end["comfy_ts"]) / 1000)
                )
    finally:
        await store.close()
    return spans


def _history_span(entry: dict[str, Any]) -> tuple[float, float] | None:
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    if stamps.get("execution_start") is None or stamps.get("execution_success") is None:
        return None
    return float(stamps["execution_start"]) / 1000, float(stamps["execution_success"]) / 1000


async def baseline(ports: list[int], jobs: int, seconds: float) -> tuple[Spans, float]:
    """The same jobs queued straight into ComfyUI, half per instance; spans from /history."""
    clients = [ComfyClient(f"http://127.0.0.1:{port}") for port in ports]
    try:
        seed = time.time_ns() % 1_000_000
        started = time.time()
        queued: list[tuple[int, str]] = []
        for n in range(jobs):
            index = n % len(clients)
            prompt_id = uuid.uuid4().hex
            graph = sleep_only(seconds, seed + n)
            await clients[index].submit(graph, client_id="bench", prompt_id=prompt_id)
            queued.append((index, prompt_id))
        spans: Spans = defaultdict(list)
        for index, prompt_id in queued:
            entry = await clients[index].history(prompt_id)
            while entry is None or "status" not in entry:
                await asyncio.sleep(0.05)
                entry = await clients[index].history(prompt_id)
            span = _history_span(entry)
            if span is not None:
                spans[index].append(span)
        makespan = max(end for items in spans.values() for _, end in items) - started
        return spans, makespan
    finally:
        for client in clients:
            await client.aclose()


def report(name: str, spans: Spans, jobs: int, makespan: float, ideal: float) -> float:
    worst = 0.0
    counted = sum(len(items) for items in spans.values())
    print(
        f"{name}: {jobs} jobs in {makespan:.2f}s (ideal {ideal:.2f}s), "
        f"achieved/ideal {ideal / makespan:.3f}"
        + (f"; {jobs - counted} jobs without ComfyUI timestamps" if counted < jobs else "")
    )
    for instance, items in sorted(spans.items()):
        items.sort()
        between = [b[0] - a[1] for a, b in itertools.pairwise(items)]
        biggest = max(between, default=0.0)
        at = between.index(biggest) + 1 if between else 0
        median = sorted(between)[len(between) // 2] if between else 0.0
        worst = max(worst, biggest)
        print(
            f"  instance {instance}: {len(items)} jobs, largest idle gap {biggest * 1000:.1f} ms "
            f"(after job {at}), median gap {median * 1000:.1f} ms"
        )
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()
    ws = workspace_sharing(installed_workspace(), Path(tempfile.mkdtemp(prefix="cf-bench-")))
    serve_config(ws)
    server = Server(ws, instances=2).start()
    try:
        ports = [i["port"] for i in server.http.get("/v1/instances").json()["instances"]]
        seed = time.time_ns() % 1_000_000
        started = time.time()
        ids = [
            server.submit(sleep_only(args.seconds, seed + n)).json()["id"] for n in range(args.jobs)
        ]
        jobs = server.wait_all(ids, 600)
        # From the first submission to the last completion as the server recorded it, so the
        # benchmark's own polling for results is not counted.
        makespan = max(float(j["timings"]["finished_at"]) for j in jobs) - started
        direct_spans, direct_makespan = asyncio.run(baseline(ports, args.jobs, args.seconds))
    finally:
        server.close()
    assert {j["status"] for j in jobs} == {"succeeded"}, {j["status"] for j in jobs}
    spans = asyncio.run(gateway_spans(ws / "state" / "jobs.db", ids))
    ideal = args.jobs * args.seconds / 2
    worst = report("via gateway", spans, args.jobs, makespan, ideal)
    direct_worst = report("ComfyUI alone", direct_spans, args.jobs, direct_makespan, ideal)
    print(
        f"achieved/ideal {ideal / makespan:.3f} (goal >= 0.95), ComfyUI alone "
        f"{ideal / direct_makespan:.3f}; gateway/alone throughput ratio "
        f"{direct_makespan / makespan:.3f}"
    )
    print(
        f"largest idle gap: {worst * 1000:.1f} ms via gateway (goal <= 5 ms), "
        f"{direct_worst * 1000:.1f} ms with ComfyUI alone"
    )


if __name__ == "__main__":
    main()
