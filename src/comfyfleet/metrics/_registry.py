"""`Metrics`: one app's collector registry, and what must happen before a scrape renders it.

Each app builds its own (tests build several in one process): nothing is registered in
prometheus-client's global default registry. Numbers that are read rather than counted
(the store's queue, the GPUs) are :class:`Snapshot`s, refreshed at scrape time; counters
and histograms are moved where the work happens and only rendered here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from comfyfleet.metrics._settings import MetricsSettings
from comfyfleet.metrics._snapshot import Snapshot
from comfyfleet.metrics._work import WorkMetrics

T = TypeVar("T")


class Closing(Protocol):
    async def close(self) -> None: ...


class Metrics:
    def __init__(self, settings: MetricsSettings | None = None) -> None:
        self.settings = settings or MetricsSettings()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._snapshots: list[Snapshot[Any]] = []
        self._owned: list[Closing] = []
        self._work: WorkMetrics | None = None
        self.registry.register(_Freshness(self._snapshots))

    @property
    def work(self) -> WorkMetrics:
        """The counters of work done in this process (made on first use: a gateway alone
        does none, and shows none)."""
        if self._work is None:
            self._work = WorkMetrics(self.registry)
        return self._work

    def snapshot(self, name: str, read: Callable[[], Awaitable[T]], initial: T) -> Snapshot[T]:
        """A value read at scrape time (see :class:`Snapshot`), with this app's timings."""
        made = Snapshot(
            name,
            read,
            initial,
            max_age_s=self.settings.refresh_s,
            wait_s=self.settings.scrape_wait_s,
        )
        self._snapshots.append(made)
        return made

    def own(self, part: Closing) -> None:
        """Close `part` with the metrics (a follower task, a GPU library handle)."""
        self._owned.append(part)

    async def render(self) -> bytes:
        """The Prometheus text of everything, with every snapshot as fresh as it can be. The
        text is written in a thread (a millisecond or two, with the process's own numbers read
        from /proc), not on the event loop that serves the other requests."""
        await asyncio.gather(*(each.fresh() for each in self._snapshots))
        return await asyncio.to_thread(generate_latest, self.registry)

    async def close(self) -> None:
        for snapshot in self._snapshots:
            await snapshot.close()
        for part in reversed(self._owned):
            await part.close()


class _Freshness(Collector):
    """How old each snapshot is, and how often reading it failed: a stale number says so."""

    def __init__(self, snapshots: list[Snapshot[Any]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterable[Metric]:
        age = GaugeMetricFamily(
            "comfyfleet_metrics_source_age_seconds",
            "Seconds since each source of read numbers was last read (NaN: never)",
            labels=["source"],
        )
        failures = CounterMetricFamily(
            "comfyfleet_metrics_source_failures",
            "Reads of each source that failed (its last numbers were shown instead)",
            labels=["source"],
        )
        for snapshot in self._snapshots:
            seconds = snapshot.age_s()
            age.add_metric([snapshot.name], float("nan") if seconds is None else seconds)
            failures.add_metric([snapshot.name], snapshot.failures)
        yield age
        yield failures
