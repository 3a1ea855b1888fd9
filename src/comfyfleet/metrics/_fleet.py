"""Gauges of the fleet's shared state, read from the store at scrape time.

Queue depth by priority, running jobs, instances by state (as their agents registered them;
those of an agent past its heartbeat timeout are `gone`), live agents, and webhook deliveries
pending or dead-lettered. Every gateway reads the same store, so each shows the same fleet. The
read is a :class:`Snapshot`: one read per `refresh_s` whoever scrapes, off the request path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from comfyfleet.jobs import JobStatus, JobStore, Registry
from comfyfleet.metrics._snapshot import Snapshot
from comfyfleet.supervise import State
from comfyfleet.webhooks import DeliveryState, Outbox

MAX_PRIORITIES = 10
"""Priority labels at most: the highest ones each get their own, the rest are summed as
`other` (priorities are any 32-bit number; a label per value would have no bound)."""
GONE = "gone"
INSTANCE_STATES = (*(str(state) for state in State), GONE)


@dataclass(frozen=True)
class FleetState:
    queued: dict[int, int] = field(default_factory=dict)
    running: int = 0
    instances: dict[str, int] = field(default_factory=dict)
    agents_alive: int = 0
    webhooks_pending: int = 0
    webhooks_failed: int = 0


@dataclass(frozen=True)
class FleetSources:
    store: JobStore
    registry: Registry
    outbox: Outbox
    agent_timeout_s: float

    async def read(self) -> FleetState:
        queued = await self.store.queue_depths()
        running = await self.store.count(JobStatus.RUNNING)
        fleet = await self.registry.fleet(timeout_s=self.agent_timeout_s)
        instances: dict[str, int] = {}
        for each in fleet.instances:
            state = each.state if each.agent in fleet.alive else GONE
            instances[state] = instances.get(state, 0) + 1
        return FleetState(
            queued=queued,
            running=running,
            instances=instances,
            agents_alive=len(fleet.alive),
            webhooks_pending=await self.outbox.count(DeliveryState.PENDING),
            webhooks_failed=await self.outbox.count(DeliveryState.FAILED),
        )


def priority_labels(queued: dict[int, int]) -> list[tuple[str, int]]:
    """(label, depth) per priority, highest first: priority 0 always (the default one, so the
    series exists while the queue is empty), at most MAX_PRIORITIES labels, the lowest ones
    beyond that summed as `other`."""
    depths = dict(queued)
    depths.setdefault(0, 0)
    ordered = sorted(depths.items(), reverse=True)
    shown = [(str(priority), n) for priority, n in ordered[: MAX_PRIORITIES - 1]]
    rest = ordered[MAX_PRIORITIES - 1 :]
    if len(rest) == 1:
        shown.append((str(rest[0][0]), rest[0][1]))
    elif rest:
        shown.append(("other", sum(n for _, n in rest)))
    return shown


class FleetCollector(Collector):
    def __init__(self, snapshot: Snapshot[FleetState]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        state = self._snapshot.value
        depth = GaugeMetricFamily(
            "comfyfleet_queue_depth",
            "Jobs waiting in the queue, by priority (the lowest beyond ten summed as other)",
            labels=["priority"],
        )
        for label, n in priority_labels(state.queued):
            depth.add_metric([label], n)
        yield depth
        yield GaugeMetricFamily(
            "comfyfleet_jobs_running", "Jobs claimed by an agent and not ended", value=state.running
        )
        instances = GaugeMetricFamily(
            "comfyfleet_instances",
            "ComfyUI instances by state, as their agents registered them (gone: the agent "
            "stopped reporting)",
            labels=["state"],
        )
        others = sorted(set(state.instances) - set(INSTANCE_STATES))
        for name in (*INSTANCE_STATES, *others):
            instances.add_metric([name], state.instances.get(name, 0))
        yield instances
        yield GaugeMetricFamily(
            "comfyfleet_agents_alive",
            "Agents that reported within their heartbeat timeout",
            value=state.agents_alive,
        )
        deliveries = GaugeMetricFamily(
            "comfyfleet_webhook_deliveries",
            "Webhook deliveries waiting to be sent (pending) or dead-lettered (failed)",
            labels=["state"],
        )
        deliveries.add_metric(["pending"], state.webhooks_pending)
        deliveries.add_metric(["failed"], state.webhooks_failed)
        yield deliveries
