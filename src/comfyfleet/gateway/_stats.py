"""Throughput and latency over a recent window, from the jobs that finished in it.

Pure arithmetic over `JobEnding`s (the store hands them out, newest first): how many jobs
ended per bucket and how, and percentiles of two latencies: `total_s` (submit to end: what a
client waited) and `running_s` (the last start to the end: what the instance spent). A bucket
with no job has no percentiles (null), not zeros, so a chart can leave a gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from comfyfleet.jobs import JobEnding, JobStatus

PERCENTILES = (50, 95, 99)
_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The `p`th percentile by nearest rank (a value that occurred); None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    found = {f"p{p}": percentile(ordered, p) for p in PERCENTILES}
    return {key: None if value is None else round(value, 4) for key, value in found.items()}


def summarize(
    endings: Sequence[JobEnding], *, now: float, window_s: float, bucket_s: float
) -> dict[str, Any]:
    """Counts and latencies for the window ending at `now`, whole and per bucket (oldest
    first; the last bucket ends at `now`)."""
    start = now - window_s
    kept = [e for e in endings if start <= e.finished_at <= now]
    count = max(1, math.ceil(window_s / bucket_s))
    grouped: list[list[JobEnding]] = [[] for _ in range(count)]
    for ending in kept:
        # Buckets end at now: the newest holds (now - bucket_s, now].
        age = now - ending.finished_at
        grouped[max(0, count - 1 - int(age // bucket_s))].append(ending)
    buckets = []
    for n, group in enumerate(grouped):
        total = latency([e.total_s for e in group])
        buckets.append(
            {
                "start": round(now - (count - n) * bucket_s, 3),
                **_counts(group),
                "total_p50": total["p50"],
                "total_p95": total["p95"],
            }
        )
    minutes = window_s / 60
    counts = _counts(kept)
    return {
        "window_s": window_s,
        "bucket_s": bucket_s,
        "now": now,
        "totals": counts | {"jobs_per_minute": round(len(kept) / minutes, 3)},
        "latency": {
            "total_s": latency([e.total_s for e in kept]),
            "running_s": latency([s for e in kept if (s := e.running_s) is not None]),
        },
        "buckets": buckets,
    }


def _counts(endings: Sequence[JobEnding]) -> dict[str, int]:
    counts = {str(status): 0 for status in _STATUSES}
    for ending in endings:
        counts[str(ending.status)] += 1
    return counts
