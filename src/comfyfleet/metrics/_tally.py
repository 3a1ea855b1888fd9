"""The fleet's job counters, read from the store's event log: the same totals from any gateway.

Every change of a job's status is one `status` event in the store, whichever process made it
(an agent finishing it, a gateway cancelling it while queued, a dispatcher expiring it), so the
event log is the one place where every job's end is seen exactly once. Each gateway follows it
from where it stood at start (counters begin at zero, as Prometheus counters do), so one scrape
of any gateway gives the whole fleet's totals, in `serve` and with separate agents alike.
Several gateway replicas each count every job: aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from comfyfleet.jobs import TERMINAL, JobEvent

log = logging.getLogger("comfyfleet.metrics")

FINAL = tuple(sorted(str(status) for status in TERMINAL))
BATCH = 1000
MAX_CODES = 40
"""Distinct error-code labels at most (comfyfleet's codes are a few dozen); the rest: `other`."""
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")


class EventLog(Protocol):
    async def events_since(self, after: int, *, limit: int = 500) -> list[JobEvent]: ...

    async def latest_event_seq(self) -> int: ...


class JobTally:
    def __init__(self, events: EventLog, registry: CollectorRegistry, *, every_s: float) -> None:
        self._events = events
        self.every_s = every_s
        self.cursor: int | None = None
        """The seq of the last event counted (None until the follower has started)."""
        self.jobs = Counter(
            "comfyfleet_jobs",
            "Jobs that ended, by final status, in the whole fleet (from the store's events)",
            ["status"],
            registry=registry,
        )
        for status in FINAL:
            self.jobs.labels(status)
        self.submitted = Counter(
            "comfyfleet_jobs_submitted", "Jobs stored by the gateways", registry=registry
        )
        self.retries = Counter(
            "comfyfleet_job_retries",
            "Attempts that failed and put their job back in the queue",
            registry=registry,
        )
        self.failures = Counter(
            "comfyfleet_job_failures",
            "Jobs that failed, by the code of their error",
            ["code"],
            registry=registry,
        )
        self._codes: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Count from the newest event stored now, then follow (a store that cannot answer
        yet is asked again at each round: counting starts once it does)."""
        if self._task is not None:
            return
        try:
            await self.catch_up()
        except Exception as exc:
            log.warning("reading job events for /metrics failed: %s", exc)
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def catch_up(self) -> int:
        """Count the events written since the last call; how many were read."""
        if self.cursor is None:
            self.cursor = await self._events.latest_event_seq()
            return 0
        read = 0
        while True:
            events = await self._events.events_since(self.cursor, limit=BATCH)
            for event in events:
                self._count(event)
            if events:
                self.cursor = events[-1].seq
            read += len(events)
            if len(events) < BATCH:
                return read

    async def _follow(self) -> None:
        failing = False
        while True:
            try:
                await self.catch_up()
                failing = False
            except Exception as exc:  # the store is away: the counters wait for it
                if not failing:
                    log.warning("reading job events for /metrics failed: %s", exc)
                failing = True
            await asyncio.sleep(self.every_s)

    def _count(self, event: JobEvent) -> None:
        if event.kind != "status":
            return
        status = event.data.get("status")
        if status == "queued":
            (self.retries if event.data.get("retry") else self.submitted).inc()
        elif status in FINAL:
            self.jobs.labels(status).inc()
            if status == "failed":
                self.failures.labels(self._code(event.data.get("error"))).inc()

    def _code(self, error: Any) -> str:
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            return "other"
        if code not in self._codes and len(self._codes) >= MAX_CODES:
            return "other"
        self._codes.add(code)
        return code
