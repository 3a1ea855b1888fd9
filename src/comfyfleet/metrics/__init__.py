"""Metrics in the Prometheus text format: where each number comes from, in every deployment.

Two kinds of numbers, two sources:

- **Shared state** (queue depth by priority, running jobs, instances by state, live agents,
  webhook deliveries pending and dead-lettered) is read from the store when `/metrics` is
  scraped, at most once per `metrics.refresh_s` whoever scrapes, and never on the request path
  of anything else (`_snapshot`). Every gateway shows the same fleet.
- **Work done** is counted where it happens. The job totals (by final status, failures by error
  code, retries, submissions) are counted from the store's event log by every gateway
  (`_tally`): every job's end is one event there, whichever process ended it, so one scrape of
  a gateway gives the fleet's totals in `serve` and with separate agents alike. What only an
  agent sees (the time each attempt spent queued, downloading models, waiting in ComfyUI's
  queue, running, storing its outputs; model loads; model downloads; webhook attempts; output
  store errors; its instances' restarts and memory; its GPUs through NVML) is counted in the
  agent's process (`_work`, `_machine`). In `serve` that is the gateway's process, so it is on
  the same `/metrics`; a separate `comfyfleet agent` serves it on `metrics.agent_port`.

Each app has its own registry (:class:`Metrics`); nothing uses prometheus-client's global one.
Labels take values comfyfleet chooses (statuses, phases, priorities capped at ten, states,
GPU and instance indexes), never job ids, URLs or file names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from comfyfleet.jobs import JobStore, Registry
from comfyfleet.metrics._fleet import (
    MAX_PRIORITIES,
    FleetCollector,
    FleetSources,
    FleetState,
    priority_labels,
)
from comfyfleet.metrics._http import PATH, metrics_app, metrics_router
from comfyfleet.metrics._machine import MachineCollector, MachineReader, MachineState
from comfyfleet.metrics._nvml import GpuReading, Nvml
from comfyfleet.metrics._registry import Metrics
from comfyfleet.metrics._settings import MetricsSettings
from comfyfleet.metrics._snapshot import Snapshot
from comfyfleet.metrics._tally import JobTally
from comfyfleet.metrics._work import PHASE_BUCKETS, WorkMetrics, storage_error_kind
from comfyfleet.supervise import InstanceStatus
from comfyfleet.webhooks import Outbox

__all__ = [
    "MAX_PRIORITIES",
    "PATH",
    "PHASE_BUCKETS",
    "FleetState",
    "GpuReading",
    "JobTally",
    "MachineState",
    "Metrics",
    "MetricsSettings",
    "Nvml",
    "Snapshot",
    "WorkMetrics",
    "count_jobs",
    "metrics_app",
    "metrics_router",
    "priority_labels",
    "storage_error_kind",
    "watch_fleet",
    "watch_machine",
]


async def count_jobs(metrics: Metrics, store: JobStore) -> JobTally:
    """Count the fleet's jobs from `store`'s event log from now on, until the metrics close."""
    tally = JobTally(store, metrics.registry, every_s=metrics.settings.follow_s)
    await tally.start()
    metrics.own(tally)
    return tally


def watch_fleet(
    metrics: Metrics,
    store: JobStore,
    registry: Registry,
    outbox: Outbox,
    *,
    agent_timeout_s: float,
) -> Snapshot[FleetState]:
    """The gauges of the fleet's shared state, read from the store at scrape time."""
    sources = FleetSources(store, registry, outbox, agent_timeout_s)
    snapshot = metrics.snapshot("fleet", sources.read, FleetState())
    metrics.registry.register(FleetCollector(snapshot))
    return snapshot


def watch_machine(
    metrics: Metrics,
    instances: Callable[[], Sequence[InstanceStatus]],
    *,
    nvml: Nvml | None = None,
) -> Snapshot[MachineState]:
    """This machine's GPUs (NVML, opened here unless `metrics.nvml` is off or `nvml` is given)
    and its instances' restarts and memory, read at scrape time."""
    if nvml is None and metrics.settings.nvml:
        nvml = Nvml.open()
    reader = MachineReader(instances, nvml)
    metrics.own(reader)
    snapshot = metrics.snapshot("machine", reader.read, MachineState())
    metrics.registry.register(MachineCollector(snapshot))
    return snapshot
