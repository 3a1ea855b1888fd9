"""The durable outbox: tables in the job store's SQLite file, through a connection of its own.

Its tables come from the job store's migration `0002_webhook_outbox.sql`, so the job store must
have opened the file once (it migrates on open); the outbox only checks that they are there. Like
the job store, every write is one `BEGIN IMMEDIATE` transaction committed before the call returns
(WAL, `synchronous=NORMAL`: a killed process loses nothing committed), and calls run on the event
loop's thread without an `await` inside a transaction. The relay's batch insert and its cursor
move are one transaction, guarded by the cursor's old value, so two relays sharing the file never
store an event twice. All SQL is in `sql/outbox.sql`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from comfyfleet.db import NO_CURSOR, immediate, load_queries, opening
from comfyfleet.webhooks._errors import DeliveryNotFailed, DeliveryNotFound, OutboxError
from comfyfleet.webhooks._model import Delivery, DeliveryState, NewDelivery
from comfyfleet.webhooks._outbox import check_limit, cursor_seq, page, spent


class SqliteOutbox:
    """Open with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, queries: dict[str, str], path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._q = queries
        self.path = path

    @classmethod
    def open(cls, path: Path) -> SqliteOutbox:
        """Open the outbox in the job store file at `path` (synchronous: milliseconds)."""
        if not path.is_file():
            raise OutboxError(
                f"no job store at {path} to hold the webhook outbox",
                hint="open the SQLite job store first: it creates the file and the outbox tables",
            )
        queries = load_queries("comfyfleet.webhooks", file_name="outbox.sql")
        try:
            with opening(path, queries["pragmas"]) as conn:
                if conn.execute(queries["has_tables"]).fetchone()[0] != 2:
                    raise OutboxError(
                        f"the job store {path} has no webhook outbox tables",
                        hint="open it with this comfyfleet's job store first (that migrates it)",
                    )
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from exc
        return cls(conn, queries, path)

    async def relay_cursor(self) -> int:
        return int(self._db().execute(self._q["relay_cursor"]).fetchone()[0])

    async def relay(
        self, after: int, last: int, deliveries: Sequence[NewDelivery], *, now: float
    ) -> bool:
        with self._write() as conn:
            moved = conn.execute(self._q["move_relay_cursor"], {"after": after, "last": last})
            if moved.rowcount == 0:
                return False
            rows = [_new_row(new, now) for new in deliveries]
            try:
                conn.executemany(self._q["insert_delivery"], rows)
            except sqlite3.IntegrityError as exc:
                raise OutboxError(
                    f"relaying events after {after} would store a delivery twice: {exc}",
                    hint="nothing was stored; this is a bug, please report it",
                ) from exc
            return True

    async def due(self, now: float, limit: int) -> list[Delivery]:
        check_limit(limit)
        rows = self._db().execute(self._q["due"], {"now": now, "limit": limit}).fetchall()
        return [_delivery(row) for row in rows]

    async def next_due_at(self, *, after: float | None = None) -> float | None:
        value = self._db().execute(self._q["next_due_at"], {"after": after}).fetchone()[0]
        return None if value is None else float(value)

    async def mark_delivered(self, delivery_id: str, *, status: int, now: float) -> bool:
        return self._update("mark_delivered", {"id": delivery_id, "status": status, "now": now})

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
        return self._update("mark_retry", params | {"now": now})

    async def mark_failed(
        self, delivery_id: str, *, status: int | None, error: str | None, now: float
    ) -> bool:
        params = {"id": delivery_id, "status": status, "error": error, "now": now}
        return self._update("mark_failed", params)

    async def list_deliveries(
        self, *, state: DeliveryState | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Delivery], str | None]:
        check_limit(limit)
        before = cursor_seq(cursor)
        params: dict[str, Any] = {"before": NO_CURSOR if before is None else before}
        params |= {"limit": limit + 1, "state": None if state is None else str(state)}
        query = self._q["list_deliveries" if state is None else "list_deliveries_by_state"]
        rows = self._db().execute(query, params).fetchall()
        return page([_delivery(row) for row in rows], limit)

    async def count(self, state: DeliveryState) -> int:
        row = self._db().execute(self._q["count_by_state"], {"state": str(state)}).fetchone()
        return int(row[0])

    async def get(self, delivery_id: str) -> Delivery:
        found = self._find(delivery_id)
        if found is None:
            raise DeliveryNotFound(delivery_id)
        return found

    async def redeliver(self, delivery_id: str, *, now: float) -> Delivery:
        with self._write() as conn:
            if conn.execute(self._q["redeliver"], {"id": delivery_id, "now": now}).rowcount == 0:
                found = self._find(delivery_id)
                if found is None:
                    raise DeliveryNotFound(delivery_id)
                raise DeliveryNotFailed(delivery_id, str(found.state))
            found = self._find(delivery_id)
        assert found is not None
        return found

    async def prune(
        self, state: DeliveryState, before: float, *, dry_run: bool = False
    ) -> tuple[int, int]:
        name = spent(state)
        with self._write() as conn:
            row = conn.execute(self._q[f"count_{name}"], {"before": before}).fetchone()
            if not dry_run:
                conn.execute(self._q[f"delete_{name}"], {"before": before})
        return int(row["n"]), int(row["bytes"])

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- helpers ----------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError("the webhook outbox is closed")
        return self._conn

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db(), self._q)

    def _update(self, query: str, params: dict[str, Any]) -> bool:
        with self._write() as conn:
            return conn.execute(self._q[query], params).rowcount > 0

    def _find(self, delivery_id: str) -> Delivery | None:
        row = self._db().execute(self._q["get_delivery"], {"id": delivery_id}).fetchone()
        return None if row is None else _delivery(row)


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


def _delivery(row: sqlite3.Row) -> Delivery:
    fields: dict[str, Any] = dict(row)
    fields["state"] = DeliveryState(fields["state"])
    return Delivery(**fields)


def _open_error(path: Path, exc: BaseException) -> OutboxError:
    return OutboxError(
        f"cannot open the webhook outbox in {path}: {exc}",
        hint="check that the file is readable and writable and is a comfyfleet job store",
    )
