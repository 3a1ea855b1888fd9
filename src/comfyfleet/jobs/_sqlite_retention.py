"""What retention asks of the SQLite job store: old finished jobs, the live ones, forgetting.

A mixin of `SqliteJobStore` (which opens the file and owns the connection), kept apart so that
the store's main module stays about the queue. Its queries are in `sql/queries.sql`.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from comfyfleet.jobs import _rules as rules
from comfyfleet.jobs._model import FinishedJob, Job
from comfyfleet.jobs._rows import finished_from_row, job_from_row


class SqliteRetention:
    """The retention half of `SqliteJobStore`."""

    _q: dict[str, str]
    _db: Callable[[], sqlite3.Connection]
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]

    async def forget(self, job_ids: Sequence[str]) -> int:
        gone = 0
        with self._write() as conn:
            for job_id in job_ids:
                gone += conn.execute(self._q["forget_job"], {"id": job_id}).rowcount
        return gone

    async def finished_jobs(
        self, before: float, *, after: tuple[float, int] | None = None, limit: int = 500
    ) -> list[FinishedJob]:
        rules.check_limit(limit)
        at, seq = (-math.inf, 0) if after is None else after
        params: dict[str, Any] = {"before": before, "at": at, "seq": seq, "limit": limit}
        rows = self._db().execute(self._q["finished_jobs"], params).fetchall()
        return [finished_from_row(row) for row in rows]

    async def live_jobs(self, *, after: int = 0, limit: int = 500) -> list[Job]:
        rules.check_limit(limit)
        params = {"after": after, "limit": limit}
        rows = self._db().execute(self._q["live_jobs"], params).fetchall()
        return [job_from_row(row) for row in rows]
