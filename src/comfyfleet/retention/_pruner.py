"""One prune: read what the live jobs need, then prune the store's records and this machine's
files, or only say what would go (a dry run).

Order, and why nothing a live job needs can go:
1. The queued and running jobs are read first (`read_live`): their ids and the inputs their
   graphs name. A job's own events and preview frames, its output folder and its inputs stay.
2. Records: finished jobs (the store deletes a job only while it is finished), spent webhook
   deliveries, old preview frames but a live job's.
3. Files: an input goes only if no live job names it and it was not used since its limit; a job
   queued after step 1 used its inputs while it was submitted (that stamps them), so they are
   not old, and a submit racing the removal itself is refused rather than queued (see
   `assets._sweep`). Output folders of live jobs stay; the size cap takes the oldest others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from comfyfleet.jobs import JobStore
from comfyfleet.retention._disk import Disk
from comfyfleet.retention._live import read_live
from comfyfleet.retention._records import Records
from comfyfleet.retention._report import Kind, Report
from comfyfleet.retention._settings import RetentionSettings


@dataclass
class Pruner:
    settings: RetentionSettings
    store: JobStore
    records: Records | None
    """The store's records to prune; None where another process does (see `RetentionTask`)."""
    disk: Disk | None
    """This machine's files to prune; None for none."""
    clock: Callable[[], float] = field(default=time.time)

    async def run(self, *, dry_run: bool, records: bool = True, files: bool = True) -> Report:
        """Prune (or, with `dry_run`, only list) what is older than its limit; `records` and
        `files` leave out the store's part or the disk's part for this run."""
        report = Report(dry_run=dry_run, at=self.clock(), limits=self.limits())
        live = await read_live(self.store)
        if records and self.records is not None:
            await self.records.prune(self.settings, report, live, dry_run=dry_run)
        if files and self.disk is not None:
            disk = self.disk
            await asyncio.to_thread(disk.prune, self.settings, report, live, dry_run=dry_run)
        return report

    def nothing(self) -> Report:
        """The report of a run that had nothing it could prune (another process was at it)."""
        report = Report(dry_run=False, at=self.clock(), limits=self.limits())
        report.notes.append("another process was pruning: nothing was done this time")
        return report

    def limits(self) -> dict[Kind, float | None]:
        s = self.settings
        return {
            Kind.JOBS: s.jobs,
            Kind.EVENTS: s.jobs,
            Kind.WEBHOOKS_DELIVERED: s.webhooks_delivered,
            Kind.WEBHOOKS_FAILED: s.webhooks_failed,
            Kind.PREVIEWS: s.previews,
            Kind.INPUTS: s.inputs,
            Kind.OUTPUTS: s.outputs,
            Kind.TEMP: s.temp,
        }
