"""The durable outbox on PostgreSQL: tables in the job store's database, through a pool of its own.

Its tables come from the PostgreSQL job store's migration `0002_webhook_outbox.sql`, so the job
store must have opened the database once (it migrates on open); the outbox only checks that they
are there. Every write is committed before the call returns. The relay's batch insert and its
cursor move are one transaction, guarded by the cursor's old value, so relays in several
processes never store an event twice: the second waits on the cursor row's lock, then finds the
cursor moved. A lost connection is retried once, as in the job store (each write is guarded by
the delivery's state, so a repeat changes nothing). All SQL is in `sql/outbox_postgres.sql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from comfyfleet.db import NO_CURSOR, Connection, Database, connect, load_queries, redact
from comfyfleet.webhooks._errors import DeliveryNotFailed, DeliveryNotFound, OutboxError
from comfyfleet.webhooks._model import Delivery, DeliveryState, NewDelivery
from comfyfleet.webhooks._outbox import check_limit, cursor_seq, page, spent


class PostgresOutbox:
    """Open with :meth:`open`."""

    def __init__(self, url: str, queries: dict[str, str]) -> None:
        self.url = redact(url)
        self._q = queries
        self._db = Database(url, OutboxError, "webhook outbox")

    @classmethod
    async def open(cls, url: str) -> PostgresOutbox:
        """Open the outbox in the job store database at `url`."""
        queries = load_queries("comfyfleet.webhooks", file_name="outbox_postgres.sql")
        conn = await connect(url, OutboxError, "webhook outbox")
        try:
            row = await (await conn.execute(queries["has_tables"])).fetchone()
        except psycopg.Error as exc:
            raise OutboxError(f"cannot open the webhook outbox in {redact(url)}: {exc}") from exc
        finally:
            await conn.close()
        if row is None or row["n"] != 2:
            raise OutboxError(
                f"the database {redact(url)} has no webhook outbox tables",
                hint="open it with this comfyfleet's job store first (that migrates it)",
            )
        box = cls(url, queries)
        await box._db.open()
        return box

    async def relay_cursor(self) -> int:
        (row,) = await self._rows("relay_cursor", {})
        return int(row["last_event_seq"])

    async def relay(
        self, after: int, last: int, deliveries: Sequence[NewDelivery], *, now: float
    ) -> bool:
        rows = [_new_row(new, now) for new in deliveries]

        async def store(conn: Connection) -> bool:
            async with conn.transaction():
                params = {"after": after, "last": last}
                moved = await conn.execute(self._q["move_relay_cursor"], params)
                if moved.rowcount == 0:
                    return False
                async with conn.cursor() as cur:
                    await cur.executemany(self._q["insert_delivery"], rows)
                return True

        try:
            return await self._db.run(store)
        except psycopg.errors.UniqueViolation as exc:
            raise OutboxError(
                f"relaying events after {after} would store a delivery twice: {exc}",
                hint="nothing was stored; this is a bug, please report it",
            ) from exc

    async def due(self, now: float, limit: int) -> list[Delivery]:
        check_limit(limit)
        return [_delivery(row) for row in await self._rows("due", {"now": now, "limit": limit})]

    async def next_due_at(self, *, after: float | None = None) -> float | None:
        (row,) = await self._rows("next_due_at", {"after": after})
        return None if row["at"] is None else float(row["at"])

    async def mark_delivered(self, delivery_id: str, *, status: int, now: float) -> bool:
        return await self._update(
            "mark_delivered", {"id": delivery_id, "status": status, "now": now}
        )

    async def mark_retry(
        self,
        delivery_id: str,
        *,
        next_at: float,
        status: int | None,
        error: str | None,
        now: float,
    ) -> bool:
        params = {"id": delivery_id, "next_at": next_at, "status": status, "error": error}
        return await self._update("mark_retry", params | {"now": now})

    async def mark_failed(
        self, delivery_id: str, *, status: int | None, error: str | None, now: float
    ) -> bool:
        params = {"id": delivery_id, "status": status, "error": error, "now": now}
        return await self._update("mark_failed", params)

    async def list_deliveries(
        self, *, state: DeliveryState | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Delivery], str | None]:
        check_limit(limit)
        before = cursor_seq(cursor)
        params: dict[str, Any] = {"before": NO_CURSOR if before is None else before}
        params |= {"limit": limit + 1, "state": None if state is None else str(state)}
        query = "list_deliveries" if state is None else "list_deliveries_by_state"
        return page([_delivery(row) for row in await self._rows(query, params)], limit)

    async def count(self, state: DeliveryState) -> int:
        (row,) = await self._rows("count_by_state", {"state": str(state)})
        return int(row["n"])

    async def get(self, delivery_id: str) -> Delivery:
        rows = await self._rows("get_delivery", {"id": delivery_id})
        if not rows:
            raise DeliveryNotFound(delivery_id)
        return _delivery(rows[0])

    async def redeliver(self, delivery_id: str, *, now: float) -> Delivery:
        rows = await self._rows("redeliver", {"id": delivery_id, "now": now})
        if rows:
            return _delivery(rows[0])
        found = await self.get(delivery_id)
        raise DeliveryNotFailed(delivery_id, str(found.state))

    async def prune(
        self, state: DeliveryState, before: float, *, dry_run: bool = False
    ) -> tuple[int, int]:
        query = f"{'count' if dry_run else 'delete'}_{spent(state)}"
        (row,) = await self._rows(query, {"before": before})
        return int(row["n"]), int(row["bytes"])

    async def close(self) -> None:
        await self._db.close()

    # --- helpers ----------------------------------------------------------------------------
    async def _rows(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async def read(conn: Connection) -> list[dict[str, Any]]:
            return await (await conn.execute(self._q[query], params)).fetchall()

        return await self._db.run(read)

    async def _update(self, query: str, params: dict[str, Any]) -> bool:
        async def write(conn: Connection) -> bool:
            return (await conn.execute(self._q[query], params)).rowcount > 0

        return await self._db.run(write)


def _new_row(new: NewDelivery, now: float) -> dict[str, Any]:
    return {
        "id": new.id,
        "event_seq": new.event_seq,
        "job_id": new.job_id,
        "type": new.type,
        "url": new.url,
        "body": new.body,
        "created_at": now,
    }


def _delivery(row: dict[str, Any]) -> Delivery:
    return Delivery(**(row | {"state": DeliveryState(row["state"])}))
