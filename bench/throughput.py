"""Keeping every instance busy: 2 instances, 100 FleetSleep(0.2 s) jobs submitted at once.

Prints achieved/ideal throughput (ideal: 100 x 0.2 s spread over 2 instances = 10 s of work each;
goal >= 0.95) and the largest idle gap of an instance between two jobs, from ComfyUI's own
timestamps (one job's execution_success to the next job's execution_start; goal <= 5 ms).

Usage: python bench/throughput.py [--jobs 100] [--seconds 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import installed_workspace, workspace_sharing
from tests.integration.serve import Server, serve_config

from comfyfleet.jobs import SqliteJobStore


def sleep_only(seconds: float, seed: int) -> dict[str, object]:
    return {"1": {"class_type": "FleetSleep", "inputs": {"seconds": seconds, "seed": seed}}}


async def gaps(db: Path, ids: list[str]) -> tuple[dict[int, list[tuple[float, float]]], int]:
    store = SqliteJobStore.open(db)
    spans: dict[int, list[tuple[float, float]]] = defaultdict(list)
    missing = 0
    try:
        for job_id in ids:
            events = await store.events(job_id)
            start = next((e.data for e in events if e.kind == "started"), None)
            end = next((e.data for e in events if e.data.get("status") == "succeeded"), None)
            if not start or not end or start.get("comfy_ts") is None:
                missing += 1
                continue
            spans[int(start["instance"])].append(
                (float(start["comfy_ts"]) / 1000, float(end["comfy_ts"]) / 1000)
            )
    finally:
        await store.close()
    return spans, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()
    ws = workspace_sharing(installed_workspace(), Path(tempfile.mkdtemp(prefix="cf-bench-")))
    serve_config(ws)
    server = Server(ws, instances=2).start()
    try:
        seed = time.time_ns() % 1_000_000
        started = time.monotonic()
        ids = [
            server.submit(sleep_only(args.seconds, seed + n)).json()["id"] for n in range(args.jobs)
        ]
        jobs = server.wait_all(ids, 600)
        makespan = time.monotonic() - started
    finally:
        server.close()
    assert {j["status"] for j in jobs} == {"succeeded"}, {j["status"] for j in jobs}
    spans, missing = asyncio.run(gaps(ws / "state" / "jobs.db", ids))
    ideal = args.jobs * args.seconds / 2
    print(
        f"{args.jobs} jobs of {args.seconds}s on 2 instances: {makespan:.2f}s "
        f"(ideal {ideal:.2f}s), achieved/ideal {ideal / makespan:.3f} (goal >= 0.95)"
    )
    worst = 0.0
    for instance, items in sorted(spans.items()):
        items.sort()
        between = [b[0] - a[1] for a, b in itertools.pairwise(items)]
        biggest = max(between, default=0.0)
        at = between.index(biggest) if between else -1
        print(
            f"  (largest after job {at + 1} of {len(items)}, "
            f"{items[at][1] - items[0][0]:.2f}s into the run)"
            if between
            else ""
        )
        worst = max(worst, biggest)
        print(
            f"instance {instance}: {len(items)} jobs, largest idle gap {biggest * 1000:.1f} ms, "
            f"median gap {sorted(between)[len(between) // 2] * 1000 if between else 0:.1f} ms"
        )
    print(
        f"largest idle gap of any instance: {worst * 1000:.1f} ms (goal <= 5 ms)"
        + (f"; {missing} jobs without ComfyUI timestamps" if missing else "")
    )


if __name__ == "__main__":
    main()
