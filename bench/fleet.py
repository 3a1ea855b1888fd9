"""Routing by model affinity on a real fleet: 2 `comfyfleet agent` processes with 2 CPU ComfyUI
instances each, one `comfyfleet gateway`, one PostgreSQL.

Every job is a `FleetModelSwitch` node (tests/fixtures/custom_nodes): it sleeps `--work`
seconds, plus `--switch` seconds when its ComfyUI process last ran another model (a stand-in for
loading a checkpoint). The fleet is told that node's `model_name` input names a checkpoint
(`models.extra_loaders`), so each job's `models` hold it as a real loader's would. Jobs name
one of 3 models in a seeded random order and are all submitted at once.

The same jobs run twice in one invocation, each time on a freshly started fleet: with affinity
(`serve.affinity_max_delay_s`), and without it (plain queue order, which hands jobs to
instances round-robin as they free up). Printed per run: makespan (first submit to last
finish), ideal makespan (the work spread evenly over the instances plus one load each),
efficiency = ideal / makespan, and model switches counted from the jobs' own outputs.
Goals: efficiency >= 0.95 with affinity; >= 5x fewer switches than without.

`store` mode measures the PostgreSQL store alone: enqueue + claim + complete of jobs that name
models, with claims that rank by affinity and with plain claims, in the same run.

Usage: python bench/fleet.py [--jobs 60] [--work 2.0] [--switch 1.0]
       python bench/fleet.py store [--jobs 3000] [--workers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.comfyui_env import free_port_block, installed_workspace, workspace_sharing
from tests.postgres_server import maintenance_url, scratch_database

from comfyfleet.jobs import Affinity, JobStatus, NewJob, PostgresJobStore

MODELS = ("m1", "m2", "m3")
AGENTS, PER_AGENT = 2, 2
LOADERS = {"FleetModelSwitch": {"model_name": "checkpoints"}}


# --- the fleet ---------------------------------------------------------------------------------


def _config(ws: Path, affinity: bool) -> None:
    settings = {
        "fleet": {"probe_interval_s": 0.2, "startup_timeout_s": 180, "stop_grace_s": 10},
        "serve": {
            "agent_heartbeat_s": 0.5,
            "max_queued": 10_000,
            "affinity_max_delay_s": 120.0 if affinity else None,
        },
        "models": {"extra_loaders": LOADERS},
    }
    (ws / "comfyfleet.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")


class Fleet:
    """The processes of one run; stopped (whole process groups) on exit."""

    def __init__(self, root: Path, store: str, affinity: bool) -> None:
        installed = installed_workspace()
        self.procs: list[subprocess.Popen[bytes]] = []
        for n in range(AGENTS):
            ws = workspace_sharing(installed, root / f"agent{n}")
            _config(ws, affinity)
            base = str(free_port_block(PER_AGENT))
            self._start(ws, ["agent", "--store", store, "-n", str(PER_AGENT), "--base-port", base])
        gateway = root / "gateway"
        gateway.mkdir()
        _config(gateway, affinity)
        port = free_port_block(1)
        self._start(gateway, ["gateway", "--store", store, "--port", str(port)])
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, trust_env=False)

    def _start(self, ws: Path, args: list[str]) -> None:
        log = (ws.parent / f"{ws.name}.out").open("ab")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "comfyfleet", *args, "-w", str(ws)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()

    def wait_serving(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(proc.poll() is not None for proc in self.procs):
                raise SystemExit("a fleet process exited early (see its .out log)")
            try:
                if self.http.get("/ready").json().get("instances_serving") == count:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        raise SystemExit(f"the fleet did not serve {count} instances in {timeout:g}s")

    def stop(self) -> None:
        self.http.close()
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _graph(model: str, n: int, work: float, switch: float) -> dict[str, Any]:
    inputs = {"model_name": model, "switch_s": switch, "seconds": work, "seed": n}
    return {"1": {"class_type": "FleetModelSwitch", "inputs": inputs}}


def _print_timeline(
    finished: list[dict[str, Any]], model_of: dict[str, str], started: float
) -> None:
    """Per instance, its jobs in order: model, start and end (seconds from the first submit),
    and `*` where the job paid for a model switch."""
    lanes: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for job in finished:
        (text,) = [o["text"] for o in job["outputs"] if o.get("kind") == "text"]
        lanes.setdefault(text.split()[0], []).append((job, text))  # the ComfyUI process
    for lane, jobs in sorted(lanes.items()):
        jobs.sort(key=lambda pair: pair[0]["timings"]["started_at"])
        cells = []
        for job, text in jobs:
            model = model_of[job["id"]]
            star = "*" if text.endswith("switched=1") else ""
            t = job["timings"]
            cells.append(
                f"{model}{star} {t['started_at'] - started:.1f}-{t['finished_at'] - started:.1f}"
            )
        print(f"  {lane}: " + ", ".join(cells))


def run_jobs(
    fleet: Fleet, models: list[str], work: float, switch: float, timeline: bool = False
) -> dict[str, float]:
    started = time.time()
    ids = []
    for n, model in enumerate(models):
        answer = fleet.http.post("/v1/jobs", json={"workflow": _graph(model, n, work, switch)})
        answer.raise_for_status()
        ids.append(answer.json()["id"])
    pending, finished = set(ids), []
    while pending:
        time.sleep(0.5)
        for job_id in list(pending):
            job = fleet.http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                pending.discard(job_id)
                finished.append(job)
    failed = [job["id"] for job in finished if job["status"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs did not succeed: {failed[:5]}")
    texts = [o["text"] for job in finished for o in job["outputs"] if o.get("kind") == "text"]
    makespan = max(job["timings"]["finished_at"] for job in finished) - started
    if timeline:
        _print_timeline(finished, dict(zip(ids, models, strict=True)), started)
    instances = AGENTS * PER_AGENT
    ideal = len(models) * work / instances + switch
    return {
        "makespan_s": makespan,
        "ideal_s": ideal,
        "efficiency": ideal / makespan,
        "switches": sum(1 for text in texts if text.endswith("switched=1")),
        "processes": len({text.split()[0] for text in texts}),
    }


def fleet_bench(args: argparse.Namespace) -> None:
    rng = random.Random(11)
    models = [rng.choice(MODELS) for _ in range(args.jobs)]
    results: dict[str, dict[str, float]] = {}
    for label, affinity in (("affinity", True), ("round-robin", False)):
        with TemporaryDirectory() as tmp, scratch_database(args.server) as store:
            fleet = Fleet(Path(tmp), store, affinity)
            try:
                fleet.wait_serving(AGENTS * PER_AGENT)
                results[label] = run_jobs(fleet, models, args.work, args.switch, args.timeline)
            finally:
                fleet.stop()
        print(f"{label}: {results[label]}", flush=True)
    print(
        f"\n{args.jobs} jobs of {args.work:g}s over {AGENTS} agents x {PER_AGENT} CPU instances, "
        f"3 models, {args.switch:g}s per model switch"
    )
    for label, figures in results.items():
        print(
            f"  {label:<12} makespan {figures['makespan_s']:6.1f}s"
            f"  ideal {figures['ideal_s']:5.1f}s"
            f"  efficiency {figures['efficiency']:.3f}  switches {figures['switches']:3.0f}"
            f"  (instances seen: {figures['processes']:.0f})"
        )
    fewer = results["round-robin"]["switches"] / max(results["affinity"]["switches"], 1)
    print(f"  switches: {fewer:.1f}x fewer with affinity (goal >= 5x)")
    print(f"  efficiency with affinity: {results['affinity']['efficiency']:.3f} (goal >= 0.95)")


# --- the store alone ---------------------------------------------------------------------------


async def store_load(url: str, jobs: int, workers: int, affinity: bool) -> float:
    """Jobs per second through enqueue, claim (ranked by affinity or not) and complete."""
    store = await PostgresJobStore.open(url)
    rng = random.Random(7)
    graph = _graph("m1", 0, 0.0, 0.0)
    done = 0

    async def produce(part: range) -> None:
        for i in part:
            model = f"checkpoints/{rng.choice(MODELS)}"
            await store.enqueue(NewJob(f"job-{i}", graph, models=(model,)))

    async def work(n: int) -> None:
        nonlocal done
        held = frozenset({f"checkpoints/{MODELS[n % 3]}"})
        want = Affinity(held, frozenset(), 30.0) if affinity else None
        while done < jobs:
            job = await store.claim(f"w{n}", lease_s=60, affinity=want)
            if job is None:
                await asyncio.sleep(0.001)
                continue
            await store.complete(job.id, f"w{n}", [])
            done += 1

    try:
        started = time.perf_counter()
        parts = [range(i, jobs, workers) for i in range(workers)]
        await asyncio.gather(*map(produce, parts), *map(work, range(workers)))
        elapsed = time.perf_counter() - started
        assert await store.count(JobStatus.SUCCEEDED) == jobs
        return jobs / elapsed
    finally:
        await store.close()


def store_bench(args: argparse.Namespace) -> None:
    print(f"{args.jobs} jobs, enqueue + claim + complete, {args.workers} producers and workers")
    for label, affinity in (("plain claims", False), ("claims ranked by affinity", True)):
        with scratch_database(args.server) as url:
            rate = asyncio.run(store_load(url, args.jobs, args.workers, affinity))
        print(f"  postgresql, {label:<26} {rate:8.0f} jobs/s  (goal >= 2,000)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=("fleet", "store"), default="fleet")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--work", type=float, default=2.0, help="seconds of work per job")
    parser.add_argument("--switch", type=float, default=1.0, help="seconds per model switch")
    parser.add_argument("--workers", type=int, default=8, help="store mode: workers")
    parser.add_argument("--timeline", action="store_true", help="print each instance's jobs")
    parser.add_argument("--server", default=maintenance_url(), help="maintenance database URL")
    args = parser.parse_args()
    if args.mode == "store":
        args.jobs = args.jobs or 3000
        store_bench(args)
    else:
        args.jobs = args.jobs or 60
        fleet_bench(args)


if __name__ == "__main__":
    main()
