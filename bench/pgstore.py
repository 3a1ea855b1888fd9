"""The PostgreSQL store alone: how many jobs per second it enqueues, claims and completes.

`--workers` producers enqueue `--jobs` jobs (as gateways do, with a queue limit) while as many
workers claim and complete them (as dispatchers' lanes do), all at once on one event loop; the
rate is jobs over the time until the last one succeeded. Each worker count in `--workers` is a
run of its own on a fresh database (8: one agent's worth of slots; 32: a fleet's). The SQLite
store runs the same load in the same invocation as the baseline (its calls are synchronous,
so concurrency does not help it). Goal: PostgreSQL >= 2,000 jobs/s on a 2-core machine.

Wall-clock rates move with whatever else the machine runs, so each run also prints the CPU time
per job: this process's (Python: the store's own work) and, where the server runs on this
machine, that of the server processes serving the run's database; and how many transactions
the store wrote per job (its calls arriving together share one: `_pgbatch`). These stay put
under load and say what the store would do on an idle machine: 2 cores / CPU per job is the
rate it could reach.

`--latency N` measures instead what the store adds to one job's way through the fleet, alone
on the machine's stores: a gateway enqueues a job and waits for its final status event while an
agent, woken by the store, claims it, records where it runs, publishes two progress events and
an output, and completes it. On SQLite both sides share one store object (`serve`: one
process); on PostgreSQL they are two store objects, with their own connections and listeners,
as a gateway and an agent are. N rounds of each, interleaved; printed: p50 and p90 of each and
what PostgreSQL adds at p50 (the ComfyUI part of a job is the same on both, so this is the
store's share of the added latency of gateway + PostgreSQL over `serve` on SQLite).

Usage: python bench/pgstore.py [--jobs 3000] [--workers 8,32] [--server postgresql://...]
       python bench/pgstore.py --latency 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.postgres_server import maintenance_url, scratch_database

from comfyfleet.jobs import (
    JobStatus,
    JobStore,
    NewJob,
    PostgresJobStore,
    QueueSignal,
    SqliteJobStore,
)

WORKFLOW = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64}}}
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    rate: float
    """Jobs per second."""
    python_ms: float
    """CPU milliseconds per job in this process."""
    server_ms: float | None
    """CPU milliseconds per job in the server processes of the run's database (None: the
    server is not on this machine)."""
    writes: float | None
    """Transactions written per job (batches of enqueues, claims and changes)."""


async def load(store: JobStore, jobs: int, workers: int) -> float:
    """Seconds to push `jobs` jobs through enqueue, claim and complete."""
    ids = iter(range(jobs))
    done = 0
    # A worker that finds nothing waits to hear of a new job, as a dispatcher does (PostgreSQL
    # tells); a store that cannot tell is polled.
    queued = asyncio.Event()
    hears = isinstance(store, QueueSignal)
    if isinstance(store, QueueSignal):
        store.on_queued(queued.set)

    async def produce() -> None:
        for i in ids:
            await store.enqueue(NewJob(id=f"job-{i}", workflow=WORKFLOW), max_queued=jobs)

    async def work(worker: str) -> None:
        nonlocal done
        while done < jobs:
            job = await store.claim(worker, lease_s=60)
            if job is None:
                queued.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queued.wait(), 0.05 if hears else 0.001)
                continue
            await store.complete(job.id, worker, [{"node": "9", "filename": "x.png"}])
            done += 1

    started = time.perf_counter()
    producers = [produce() for _ in range(workers)]
    await asyncio.gather(*producers, *(work(f"w{n}") for n in range(workers)))
    elapsed = time.perf_counter() - started
    assert await store.count(JobStatus.SUCCEEDED) == jobs
    return elapsed


def server_ticks(url: str) -> dict[int, int] | None:
    """CPU ticks so far of each server process connected to `url`'s database (None when the
    server is not a process of this machine)."""
    database = urlsplit(url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    ticks: dict[int, int] = {}
    for (pid,) in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


async def measure_postgres(url: str, jobs: int, workers: int) -> Figures:
    store = await PostgresJobStore.open(url)
    try:
        before = server_ticks(url)
        cpu = time.process_time()
        elapsed = await load(store, jobs, workers)
        python_ms = (time.process_time() - cpu) / jobs * 1000
        after = server_ticks(url)
        server_ms = None
        if before is not None and after is not None:
            ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
            server_ms = ticks / TICK / jobs * 1000
        batches = store._enqueues.batches + store._claims.batches + store._changes.batches
        return Figures(jobs / elapsed, python_ms, server_ms, batches / jobs)
    finally:
        await store.close()


async def measure_sqlite(path: Path, jobs: int) -> Figures:
    store = SqliteJobStore.open(path)
    try:
        cpu = time.process_time()
        elapsed = await load(store, jobs, 1)
        return Figures(jobs / elapsed, (time.process_time() - cpu) / jobs * 1000, None, None)
    finally:
        await store.close()


def line(label: str, figures: Figures, sqlite: Figures) -> str:
    text = f"  {label:<26} {figures.rate:7.0f} jobs/s ({figures.rate / sqlite.rate:4.2f}x sqlite)"
    text += f"  cpu/job: python {figures.python_ms:.2f} ms"
    if figures.server_ms is not None:
        total = figures.python_ms + figures.server_ms
        text += f" + server {figures.server_ms:.2f} ms = {total:.2f} ms"
        text += f" (2 cores: {2000 / total:,.0f} jobs/s)"
    if figures.writes is not None:
        text += f"  transactions/job {figures.writes:.2f}"
    return text


async def one_job(gateway: JobStore, agent_turn: asyncio.Event, job_id: str) -> float:
    """Seconds from the gateway's enqueue to its sight of the job's final status."""
    started = time.perf_counter()
    await gateway.enqueue(NewJob(id=job_id, workflow=WORKFLOW), max_queued=1000)
    agent_turn.set()
    after = 0
    while True:
        for event in await gateway.wait_events(job_id, after=after, timeout=10):
            after = event.seq
            if event.kind == "status" and event.data["status"] == "succeeded":
                return time.perf_counter() - started


async def agent(store: JobStore, turn: asyncio.Event, stop: asyncio.Event) -> None:
    """Claims whatever it hears of and takes it through a job's writes to its end."""
    if isinstance(store, QueueSignal):
        store.on_queued(turn.set)
    while not stop.is_set():
        job = await store.claim("agent", lease_s=60, instance=0)
        if job is None:
            turn.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(turn.wait(), 0.05)
            continue
        await store.set_running_info(job.id, "agent", prompt_id=f"p-{job.id}")
        for step in (1, 2):
            await store.publish(job.id, "progress", {"value": step, "max": 2})
        await store.publish(job.id, "output", {"node": "9", "filename": "x.png"})
        await store.complete(job.id, "agent", [{"node": "9", "filename": "x.png"}])


async def latency(url: str, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteJobStore.open(Path(tmp) / "jobs.db")
        pg_gateway, pg_agent = await PostgresJobStore.open(url), await PostgresJobStore.open(url)
        # SQLite's agent hears of a job from the gateway in the process; PostgreSQL's from
        # the store's notification (`agent` subscribes to it).
        sides = {"sqlite": (sqlite, sqlite), "postgresql": (pg_gateway, pg_agent)}
        turns = {name: asyncio.Event() for name in sides}
        stop = asyncio.Event()
        agents = [agent(a, turns[name], stop) for name, (_, a) in sides.items()]
        tasks = [asyncio.ensure_future(a) for a in agents]
        try:
            for i in range(rounds + 10):
                for name, (gateway, _) in sides.items():
                    # PostgreSQL's agent must hear of the job by itself: its turn is not set.
                    turn = turns[name] if name == "sqlite" else asyncio.Event()
                    took = await one_job(gateway, turn, f"{name}-{i}")
                    if i >= 10:  # the first rounds warm connections and plans
                        times[name].append(took)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for store in (sqlite, pg_gateway, pg_agent):
                await store.close()
    return times


def latency_report(times: dict[str, list[float]]) -> None:
    p50 = {name: statistics.median(values) * 1000 for name, values in times.items()}
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"one job through the store, {len(times['sqlite'])} interleaved rounds (load {load_avg})")
    for name, values in times.items():
        p90 = sorted(values)[int(0.9 * len(values))] * 1000
        print(f"  {name:<11} p50 {p50[name]:6.2f} ms  p90 {p90:6.2f} ms")
    added = p50["postgresql"] - p50["sqlite"]
    print(f"  postgresql adds {added:+.2f} ms at p50 (goal for gateway + postgresql: <= 2 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--workers", default="8,32", help="worker counts, comma-separated")
    parser.add_argument("--server", default=maintenance_url(), help="maintenance database URL")
    parser.add_argument("--latency", type=int, default=0, help="rounds of the latency mode")
    args = parser.parse_args()
    if args.latency:
        with scratch_database(args.server) as url:
            latency_report(asyncio.run(latency(url, args.latency)))
        return
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = asyncio.run(measure_sqlite(Path(tmp) / "jobs.db", args.jobs))
    runs: dict[int, Figures] = {}
    for workers in counts:
        with scratch_database(args.server) as url:
            runs[workers] = asyncio.run(measure_postgres(url, args.jobs, workers))
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.jobs} jobs, enqueue + claim + complete (load average {load_avg})")
    print(line("sqlite (baseline), 1", sqlite, sqlite))
    for workers, figures in runs.items():
        print(line(f"postgresql, {workers} workers", figures, sqlite))
    print("  goal: postgresql >= 2,000 jobs/s")


if __name__ == "__main__":
    main()
