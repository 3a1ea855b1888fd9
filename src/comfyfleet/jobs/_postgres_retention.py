"""What retention asks of the PostgreSQL job store: old finished jobs, the live ones, forgetting.

A mixin of `PostgresJobStore` (which opens the database), kept apart so that the store's main
module stays about the queue. Its queries are in `sql/postgres/queries.sql`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from comfyfleet.db import Connection, Database
from comfyfleet.jobs import _rules as rules
from comfyfleet.jobs._model import FinishedJob, Job
from comfyfleet.jobs._rows import finished_from_row, job_from_row


class PostgresRetention:
    """The retention half of `PostgresJobStore`."""

    _db: Database
    _q: dict[str, str]

    async def forget(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0

        async def delete(conn: Connection) -> int:
            cursor = await conn.execute(self._q["forget_jobs"], {"ids": list(job_ids)})
            return cursor.rowcount

        return await self._db.run(delete)

    async def finished_jobs(
        self, before: float, *, after: tuple[float, int] | None = None, limit: int = 500
    ) -> list[FinishedJob]:
        rules.check_limit(limit)
        at, seq = (-math.inf, 0) if after is None else after
        params: dict[str, Any] = {"before": before, "at": at, "seq": seq, "limit": limit}
        return [finished_from_row(row) for row in await self._read("finished_jobs", params)]

    async def live_jobs(self, *, after: int = 0, limit: int = 500) -> list[Job]:
        rules.check_limit(limit)
        rows = await self._read("live_jobs", {"after": after, "limit": limit})
        return [job_from_row(row) for row in rows]

    async def _read(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async def read(conn: Connection) -> list[dict[str, Any]]:
            return await (await conn.execute(self._q[query], params)).fetchall()

        return await self._db.run(read)
