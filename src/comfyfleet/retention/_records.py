"""Pruning the store's records: finished jobs with their events, spent webhook deliveries, and
preview frames. Every removal is decided again by the store at the moment it deletes (a job only
while finished, a delivery only while delivered or failed), so nothing a live job has can go.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfyfleet.jobs import FinishedJob, JobStore, Registry
from comfyfleet.retention._live import Live
from comfyfleet.retention._report import Item, Kind, Report
from comfyfleet.retention._settings import RetentionSettings
from comfyfleet.webhooks import DeliveryState, Outbox

PAGE = 500
MAX_JOBS = 100_000
"""Finished jobs forgotten in one run at most: the next run goes on (keeps a run's memory and
its time in the store bounded after a long time without pruning)."""


@dataclass
class Records:
    store: JobStore
    outbox: Outbox | None = None
    registry: Registry | None = None

    async def prune(
        self, settings: RetentionSettings, report: Report, live: Live, *, dry_run: bool
    ) -> None:
        now = report.at
        if settings.jobs is not None:
            await self._jobs(now - settings.jobs, report, dry_run=dry_run)
        spent = (
            (Kind.WEBHOOKS_DELIVERED, DeliveryState.DELIVERED, settings.webhooks_delivered),
            (Kind.WEBHOOKS_FAILED, DeliveryState.FAILED, settings.webhooks_failed),
        )
        for kind, state, limit in spent:
            if limit is not None and self.outbox is not None:
                count, size = await self.outbox.prune(state, now - limit, dry_run=dry_run)
                report.count(kind, count, size)
        if settings.previews is not None and self.registry is not None:
            before = now - settings.previews
            count, size = await self.registry.prune_previews(
                before, keep=live.jobs, dry_run=dry_run
            )
            report.count(Kind.PREVIEWS, count, size)

    async def _jobs(self, before: float, report: Report, *, dry_run: bool) -> None:
        """Forget the jobs that ended before `before`, oldest first, in batches. A job whose
        last events the webhook relay has not yet turned into deliveries waits for it."""
        relayed = await self.outbox.relay_cursor() if self.outbox is not None else None
        planned: list[FinishedJob] = []
        waiting = 0
        after: tuple[float, int] | None = None
        while len(planned) < MAX_JOBS:
            page = await self.store.finished_jobs(before, after=after, limit=PAGE)
            if not page:
                break
            after = page[-1].cursor
            for job in page:
                if relayed is not None and job.last_event > relayed:
                    waiting += 1
                else:
                    planned.append(job)
        if waiting:
            report.notes.append(
                f"{waiting} finished jobs wait for the webhook relay to pass their last events"
            )
        if len(planned) >= MAX_JOBS:
            report.notes.append(f"more than {MAX_JOBS} finished jobs are due: the next run goes on")
        for start in range(0, len(planned), PAGE):
            batch = planned[start : start + PAGE]
            if not dry_run:
                await self.store.forget([job.id for job in batch])
            for job in batch:
                report.remove(Item(Kind.JOBS, job.id, job.bytes, job.finished_at))
                report.count(Kind.EVENTS, job.events, job.event_bytes)
