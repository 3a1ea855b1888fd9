"""How a lane's attempts end: the one record of each attempt's result, kept until the store has it.

An attempt ends failed (with a :class:`JobError`) or succeeded (with its outputs, stored first).
Either way the store must hear it, and the store may be away (a restart, a cut link): the report
is then retried from a task of its own with a growing delay (`_reports.until_answered`), so
the lane goes on serving meanwhile and nothing is lost. A store that refuses the report (the
lease lapsed and another worker took the job) is logged and let be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from comfyfleet.comfy import ComfyError
from comfyfleet.jobs._failures import JobError, attempt_error
from comfyfleet.jobs._model import Job
from comfyfleet.jobs._outputs import JobOutput
from comfyfleet.jobs._remote import RemoteServer
from comfyfleet.jobs._reports import Report, log_refused, unreachable, until_answered
from comfyfleet.jobs._results import OutputPublisher, storage_error
from comfyfleet.jobs._store import JobStore
from comfyfleet.jobs._watch import JobWatch, NoWatch
from comfyfleet.storage import StorageError

log = logging.getLogger("comfyfleet.jobs")


class Endings:
    """The ends of one lane's attempts, and the tasks still reporting or storing them."""

    def __init__(
        self,
        store: JobStore,
        worker: str,
        instance: int,
        *,
        publisher: OutputPublisher | None,
        remote: RemoteServer | None,
        wake: asyncio.Event,
        watch: JobWatch | None = None,
    ) -> None:
        self.watch: JobWatch = watch or NoWatch()
        self.store = store
        self.worker = worker
        self.instance = instance
        self.publisher = publisher
        self.remote = remote
        self.wake = wake
        self.tasks: dict[str, asyncio.Task[None]] = {}
        """By job id: outputs being stored, or an end waiting for the store to answer."""

    async def fail(self, job: Job, error: JobError) -> None:
        """Report a failed attempt (its slot is already free)."""
        if error.code == "internal_error":
            log.warning("job %s on instance %s: %s", job.id, self.instance, error.message)
        retry = "may be retried" if error.retryable else "final"
        log.info("job %s: attempt failed (%s, %s): %s", job.id, error.code, retry, error.message)
        failed = error.to_dict()
        await self._end(
            job.id,
            "failed attempt",
            lambda: self.store.fail(
                job.id, self.worker, failed, retryable=error.retryable, attempt=job.attempts
            ),
        )
        self.wake.set()

    async def succeed(self, job: Job, outputs: list[JobOutput], details: dict[str, Any]) -> None:
        """Complete a job ComfyUI finished. Storing its files can take a while (an upload):
        that runs in a task of its own, the slot being free already."""
        if self.publisher is None:
            await self._end(
                job.id,
                "result",
                lambda: self.store.complete(
                    job.id, self.worker, outputs, details=details, attempt=job.attempts
                ),
            )
            log.info("job %s succeeded", job.id)
            return
        self._keep(job.id, self._store_outputs(job, outputs, details))

    async def _end(self, job_id: str, what: str, report: Report) -> None:
        """Report how an attempt ended, at once or, while the store cannot be reached, from a
        task of its own that keeps trying (see `_reports`), so the lane goes on meanwhile."""
        try:
            answer = await report()
        except Exception as exc:
            if not unreachable(exc):
                raise
            self._keep(job_id, until_answered(report, job_id=job_id, what=what))
            return
        if answer is None:
            log_refused(job_id, what)

    def _keep(self, job_id: str, work: Awaitable[object]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self.tasks[job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job_id, None))

    async def _store_outputs(
        self, job: Job, outputs: list[JobOutput], details: dict[str, Any]
    ) -> None:
        assert self.publisher is not None
        began = time.monotonic()
        try:
            try:
                if self.remote is not None:
                    await self.remote.fetch_outputs(job.id, outputs)
                published = await self.publisher.publish(job, outputs)
            finally:
                self.watch.phase("storing", time.monotonic() - began)
        except ComfyError as exc:  # the attached server went away before we had its files
            failed = attempt_error(exc, instance=self.instance, doing="downloading its outputs")
            await self._fail_finishing(job, failed.to_dict(), retryable=True)
            self.wake.set()
            return
        except StorageError as exc:
            self.watch.storage_failed(exc)
            log.warning("job %s: %s", job.id, exc)
            error = storage_error(exc)
            await self._fail_finishing(job, error, retryable=error["retryable"])
            self.wake.set()
            return
        except Exception as exc:  # a bug here must not leave the job running until its lease
            log.exception("job %s: publishing its outputs failed", job.id)
            failed = attempt_error(exc, instance=self.instance, doing="storing its outputs")
            await self._fail_finishing(job, failed.to_dict(), retryable=failed.retryable)
            return

        async def complete() -> Job | None:
            return await self.store.complete(
                job.id, self.worker, published, details=details, attempt=job.attempts
            )

        if await until_answered(complete, job_id=job.id, what="result") is not None:
            log.info("job %s succeeded (%d outputs)", job.id, len(published))

    async def _fail_finishing(self, job: Job, error: dict[str, Any], *, retryable: bool) -> None:
        async def fail() -> Job | None:
            return await self.store.fail(
                job.id, self.worker, error, retryable=retryable, attempt=job.attempts
            )

        await until_answered(fail, job_id=job.id, what="failed attempt")
