"""The PostgreSQL job store alone: how many jobs per second it enqueues, claims and completes.

`--workers` producers enqueue `--jobs` jobs (as the gateway does, with a queue limit) while as
many workers claim and complete them (as dispatchers do), all at once on one event loop; the
rate is jobs over the time until the last one succeeded. The SQLite store runs the same load in
the same run as the baseline (its calls are synchronous, so concurrency does not help it). Goal:
PostgreSQL >= 2,000 jobs/s on a 2-core machine.

PostgreSQL runs twice: with the server's default durability (every commit flushed to disk before
it returns) and with `synchronous_commit=off` passed in the URL (`options=-c ...`), which lets a
server crash lose the last few hundred milliseconds of acknowledged changes (never corrupts).

Usage: python bench/pgstore.py [--jobs 3000] [--workers 8] [--server postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.postgres_server import maintenance_url, scratch_database

from comfyfleet.jobs import JobStatus, JobStore, NewJob, PostgresJobStore, SqliteJobStore

WORKFLOW = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64}}}
NO_FLUSH = "options=-c%20synchronous_commit%3Doff"


async def load(store: JobStore, jobs: int, workers: int) -> float:
    """Seconds to push `jobs` jobs through enqueue, claim and complete."""
    ids = iter(range(jobs))
    done = 0

    async def produce() -> None:
        for i in ids:
            await store.enqueue(NewJob(id=f"job-{i}", workflow=WORKFLOW), max_queued=jobs)

    async def work(worker: str) -> None:
        nonlocal done
        while done < jobs:
            job = await store.claim(worker, lease_s=60)
            if job is None:
                await asyncio.sleep(0.001)
                continue
            await store.complete(job.id, worker, [{"node": "9", "filename": "x.png"}])
            done += 1

    started = time.perf_counter()
    producers = [produce() for _ in range(workers)]
    await asyncio.gather(*producers, *(work(f"w{n}") for n in range(workers)))
    elapsed = time.perf_counter() - started
    assert await store.count(JobStatus.SUCCEEDED) == jobs
    return elapsed


async def measure(store: JobStore, jobs: int, workers: int) -> float:
    try:
        return jobs / await load(store, jobs, workers)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--server", default=maintenance_url(), help="maintenance database URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = asyncio.run(measure(SqliteJobStore.open(Path(tmp) / "jobs.db"), args.jobs, 1))
    rates: dict[str, float] = {}
    for label, extra in (("postgresql", ""), ("postgresql, synchronous_commit=off", NO_FLUSH)):
        with scratch_database(args.server) as url:
            full = f"{url}?{extra}" if extra else url

            async def run(full: str = full) -> float:
                return await measure(await PostgresJobStore.open(full), args.jobs, args.workers)

            rates[label] = asyncio.run(run())
    print(f"{args.jobs} jobs, enqueue + claim + complete, {args.workers} producers and workers")
    print(f"  sqlite (baseline)                    {sqlite:8.0f} jobs/s")
    for label, rate in rates.items():
        print(f"  {label:<36} {rate:8.0f} jobs/s  ({rate / sqlite:.2f}x sqlite)")


if __name__ == "__main__":
    main()
