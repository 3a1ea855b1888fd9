"""Which queued job a claim takes: priority, then model affinity, then age, within limits.

The rules are here, in Python, once; the memory store runs them as they are (`best_claim`) and
the SQL stores implement the same order in their `next_queued` queries, which the store
contract checks against each other. Running limits per API key are part of it: a job whose
owner already runs `max_running` jobs is not claimable until one of them ends.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from comfyfleet.jobs._model import Job

CLAIM_WINDOW = 100
"""How many claimable jobs, in plain order (priority, then age), a claim ranks by affinity.

A bound on the work of one claim however long the queue is: the SQL backends read this many
rows through the queue index and sort only those. A job further back than the window waits
for the ones ahead to go, as it would without affinity."""


@dataclass(frozen=True)
class Affinity:
    """What the instance claiming a job already has, so it can prefer jobs that need no model
    switch: loading a checkpoint costs seconds to minutes, far more than most jobs wait.

    `loaded` are the models the instance ran its last job with (still in memory), `on_disk`
    the files its machine has (no download); both as `folder_type/name`, like `Job.models`.
    `max_delay_s` bounds what affinity may cost the oldest job: one queued that long is
    taken by the next claim of its priority whatever it needs (None: no bound).

    `may_switch` False limits the claim to jobs that need no switch (tier 0): what an instance
    claims for its pipelined slot, behind running work. A job that needs a switch waits in the
    shared queue instead, where whichever instance frees first (perhaps one that holds its
    model) takes it: queued behind our running job it would wait for it, then load."""

    loaded: frozenset[str] = frozenset()
    on_disk: frozenset[str] = frozenset()
    max_delay_s: float | None = None
    may_switch: bool = True


def affinity_tier(job: Job, affinity: Affinity | None, *, now: float) -> int:
    """0: no switch needed (its models are loaded, it needs none, or it waited past the
    bound); 1: its files are on this machine; 2: it needs a download."""
    if affinity is None or not job.models:
        return 0
    if affinity.max_delay_s is not None and job.queued_at <= now - affinity.max_delay_s:
        return 0
    if affinity.loaded.intersection(job.models):
        return 0
    return 1 if affinity.on_disk.intersection(job.models) else 2


def plain_order(job: Job) -> tuple[int, float, int]:
    """The queue's order without affinity: what `queue_position` counts and the window cuts."""
    return (-job.priority, job.queued_at, job.seq)


def claim_rank(job: Job, affinity: Affinity | None, *, now: float) -> tuple[int, int, float, int]:
    """Smallest first: priority, then affinity tier, then age. Within a priority a job past
    the delay bound ranks with the loaded ones and, being older than any of them, first."""
    return (-job.priority, affinity_tier(job, affinity, now=now), job.queued_at, job.seq)


def under_limit(job: Job, running: int) -> bool:
    """Whether the job may start while its owner runs `running` jobs (anonymous jobs and jobs
    without a limit always may)."""
    return job.owner is None or job.max_running is None or running < job.max_running


def best_claim(
    queued: Sequence[Job], running: Mapping[str, int], affinity: Affinity | None, *, now: float
) -> Job | None:
    """The job a claim takes among `queued`, given the running jobs per owner: the reference
    that the SQL backends' `next_queued` queries implement."""
    allowed = [j for j in queued if under_limit(j, running.get(j.owner or "", 0))]
    window = heapq.nsmallest(CLAIM_WINDOW, allowed, key=plain_order)
    if affinity is not None and not affinity.may_switch:
        window = [job for job in window if affinity_tier(job, affinity, now=now) == 0]
    return min(window, key=lambda job: claim_rank(job, affinity, now=now), default=None)


def claim_params(affinity: Affinity | None, *, now: float) -> dict[str, Any]:
    """The parameters of the SQL stores' `next_queued`, for `affinity` at `now`: the sets as
    sorted lists (each store encodes them its way), the time before which a job counts as
    overdue (+inf without affinity, which makes every job tier 0: the plain order) and the
    highest tier the claim may take."""
    if affinity is None:
        overdue_before = math.inf
    elif affinity.max_delay_s is None:
        overdue_before = -math.inf
    else:
        overdue_before = now - affinity.max_delay_s
    loaded = sorted(affinity.loaded) if affinity else []
    on_disk = sorted(affinity.on_disk) if affinity else []
    return {
        "window": CLAIM_WINDOW,
        "overdue_before": overdue_before,
        "loaded": loaded,
        "on_disk": on_disk,
        "max_tier": 2 if affinity is None or affinity.may_switch else 0,
    }
