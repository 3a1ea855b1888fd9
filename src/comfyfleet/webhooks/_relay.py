"""The relay: job events in, delivery rows out (the transactional outbox's other half).

The job store appends an event atomically with every change of a job; the relay reads those
events in seq order from its durable cursor on, keeps the ones a job's webhook asked for, and
stores them as deliveries while moving the cursor in one outbox transaction. A crash before that
transaction redoes the batch; a crash after it finds the cursor moved. Either way each event
becomes exactly one delivery.

The body is built here, once: what the receiver gets is a snapshot of the job when the event was
relayed (usually milliseconds after it happened), and it stays byte-identical on every retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from comfyfleet.jobs import JobEvent, JobNotFound, JobOptions
from comfyfleet.webhooks._errors import WebhookConfigError
from comfyfleet.webhooks._model import NewDelivery, WebhookTarget, event_type, parse_webhook
from comfyfleet.webhooks._outbox import Outbox

log = logging.getLogger("comfyfleet.webhooks")


class HasOptions(Protocol):
    """A job as the relay needs it: its submit options (their `webhook`)."""

    @property
    def options(self) -> JobOptions: ...


class EventSource(Protocol):
    """What the relay reads: the job store (any JobStore has these two)."""

    async def events_since(self, after: int, *, limit: int = 500) -> list[JobEvent]:
        """Events of every job with seq > `after`, oldest first."""
        ...

    async def get(self, job_id: str) -> HasOptions:
        """The job; raises JobNotFound."""
        ...


JobView = Callable[[Any], Mapping[str, Any]]
"""Builds a payload's `data` from a job (the gateway passes its API job view)."""


def default_view(job: Any) -> dict[str, Any]:
    """The job's own fields, less the workflow graph (large, and the client sent it)."""
    to_dict = getattr(job, "to_dict", None)
    if not callable(to_dict):
        return {"id": getattr(job, "id", None)}
    data: dict[str, Any] = dict(to_dict())
    data.pop("workflow", None)
    return data


class Relay:
    """Moves job events into the outbox, `batch` events per transaction."""

    def __init__(
        self,
        source: EventSource,
        outbox: Outbox,
        *,
        view: JobView = default_view,
        default_events: Iterable[str],
        batch: int = 500,
        new_id: Callable[[], str] = lambda: f"msg_{uuid.uuid4().hex}",
    ) -> None:
        self.source = source
        self.outbox = outbox
        self.view = view
        self.default_events = tuple(default_events)
        self.batch = batch
        self.new_id = new_id

    async def run_once(self, *, now: float) -> tuple[int, int]:
        """Relay one batch. Returns (events read, deliveries stored); (0, 0) when caught up."""
        after = await self.outbox.relay_cursor()
        events = await self.source.events_since(after, limit=self.batch)
        if not events:
            return 0, 0
        deliveries = await self._deliveries(events, now=now)
        if not await self.outbox.relay(after, events[-1].seq, deliveries, now=now):
            log.info("another relay moved the webhook cursor past %s; reading again", after)
            return len(events), 0
        return len(events), len(deliveries)

    async def drain(self, *, now: float) -> int:
        """Relay until caught up; returns the deliveries stored."""
        stored = 0
        while True:
            read, added = await self.run_once(now=now)
            stored += added
            if read == 0:
                return stored
            await asyncio.sleep(0)  # a long backlog must not hold the event loop

    async def _deliveries(self, events: list[JobEvent], *, now: float) -> list[NewDelivery]:
        jobs: dict[str, tuple[Any, WebhookTarget] | None] = {}
        deliveries: list[NewDelivery] = []
        for event in events:
            if event.job_id not in jobs:
                jobs[event.job_id] = await self._target(event.job_id)
            found = jobs[event.job_id]
            if found is None:
                continue
            job, target = found
            kind = event_type(event.kind, event.data)
            if not target.wants(kind):
                continue
            body = self._body(job, event, kind)
            deliveries.append(
                NewDelivery(
                    id=self.new_id(),
                    event_seq=event.seq,
                    job_id=event.job_id,
                    type=kind,
                    url=target.url,
                    body=body,
                )
            )
        return deliveries

    async def _target(self, job_id: str) -> tuple[Any, WebhookTarget] | None:
        try:
            job = await self.source.get(job_id)
        except JobNotFound:
            return None
        value = job.options.webhook
        if value is None:
            return None
        try:
            return job, parse_webhook(value.to_json(), default_events=self.default_events)
        except WebhookConfigError as exc:  # checked at submit; a stored one could predate that
            log.warning("job %s has an unusable webhook option, skipped: %s", job_id, exc)
            return None

    def _body(self, job: Any, event: JobEvent, kind: str) -> str:
        try:
            data = dict(self.view(job))
        except Exception:  # a view bug must not stop every other job's webhooks
            log.exception("building the webhook view of job %s failed", event.job_id)
            data = {"id": event.job_id}
        data["event"] = {"seq": event.seq, "kind": event.kind, "data": event.data}
        payload = {
            "type": kind,
            "timestamp": datetime.fromtimestamp(event.at, UTC).isoformat(),
            "data": data,
        }
        return json.dumps(payload, separators=(",", ":"), default=str)
