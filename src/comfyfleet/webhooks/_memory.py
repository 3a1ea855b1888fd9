"""The in-memory outbox: for tests and for `memory://` job stores (lost on exit, like them).

It keeps exactly the rules of the SQLite outbox (the same tests run against both); every method
runs without an `await` inside, so each is atomic on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from comfyfleet.webhooks._errors import DeliveryNotFailed, DeliveryNotFound, OutboxError
from comfyfleet.webhooks._model import Delivery, DeliveryState, NewDelivery
from comfyfleet.webhooks._outbox import check_limit, cursor_seq, page, spent


class MemoryOutbox:
    def __init__(self, *, cursor: int = 0) -> None:
        self._cursor = cursor
        self._rows: dict[str, Delivery] = {}  # insertion order is seq order
        self._event_seqs: set[int] = set()
        self._seq = 0
        self._closed = False

    async def relay_cursor(self) -> int:
        self._check_open()
        return self._cursor

    async def relay(
        self, after: int, last: int, deliveries: Sequence[NewDelivery], *, now: float
    ) -> bool:
        self._check_open()
        if self._cursor != after:
            return False
        seqs = [new.event_seq for new in deliveries]
        ids = [new.id for new in deliveries]
        if len(set(seqs)) < len(seqs) or self._event_seqs.intersection(seqs):
            raise OutboxError("a job event was relayed twice; nothing was stored")
        if len(set(ids)) < len(ids) or any(i in self._rows for i in ids):
            raise OutboxError("two webhook deliveries got the same id; nothing was stored")
        for new in deliveries:
            self._seq += 1
            self._rows[new.id] = Delivery(
                id=new.id,
                seq=self._seq,
                event_seq=new.event_seq,
                job_id=new.job_id,
                type=new.type,
                url=new.url,
                body=new.body,
                state=DeliveryState.PENDING,
                attempts=0,
                created_at=now,
                next_attempt_at=now,
                first_attempt_at=None,
                last_attempt_at=None,
                delivered_at=None,
                failed_at=None,
                last_status=None,
                last_error=None,
            )
            self._event_seqs.add(new.event_seq)
        self._cursor = last
        return True

    async def due(self, now: float, limit: int) -> list[Delivery]:
        check_limit(limit)
        ready = [row for row in self._heads() if row.next_attempt_at <= now]
        ready.sort(key=lambda row: (row.next_attempt_at, row.seq))
        return ready[:limit]

    async def next_due_at(self, *, after: float | None = None) -> float | None:
        times = [row.next_attempt_at for row in self._heads()]
        return min((t for t in times if after is None or t > after), default=None)

    async def mark_delivered(self, delivery_id: str, *, status: int, now: float) -> bool:
        return self._attempted(
            delivery_id,
            now,
            state=DeliveryState.DELIVERED,
            delivered_at=now,
            last_status=status,
            last_error=None,
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
        return self._attempted(
            delivery_id, now, next_attempt_at=next_at, last_status=status, last_error=error
        )

    async def mark_failed(
        self, delivery_id: str, *, status: int | None, error: str | None, now: float
    ) -> bool:
        return self._attempted(
            delivery_id,
            now,
            state=DeliveryState.FAILED,
            failed_at=now,
            last_status=status,
            last_error=error,
        )

    async def list_deliveries(
        self, *, state: DeliveryState | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Delivery], str | None]:
        check_limit(limit)
        self._check_open()
        before = cursor_seq(cursor)
        rows = [
            row
            for row in reversed(self._rows.values())
            if (state is None or row.state == state) and (before is None or row.seq < before)
        ]
        return page(rows[: limit + 1], limit)

    async def count(self, state: DeliveryState) -> int:
        self._check_open()
        return sum(1 for row in self._rows.values() if row.state == state)

    async def get(self, delivery_id: str) -> Delivery:
        self._check_open()
        row = self._rows.get(delivery_id)
        if row is None:
            raise DeliveryNotFound(delivery_id)
        return row

    async def redeliver(self, delivery_id: str, *, now: float) -> Delivery:
        row = await self.get(delivery_id)
        if row.state is not DeliveryState.FAILED:
            raise DeliveryNotFailed(delivery_id, str(row.state))
        row = replace(
            row,
            state=DeliveryState.PENDING,
            attempts=0,
            first_attempt_at=None,
            next_attempt_at=now,
            failed_at=None,
        )
        self._rows[delivery_id] = row
        return row

    async def prune(
        self, state: DeliveryState, before: float, *, dry_run: bool = False
    ) -> tuple[int, int]:
        field = f"{spent(state)}_at"
        self._check_open()
        old = [
            row
            for row in self._rows.values()
            if row.state is state and getattr(row, field) < before
        ]
        if not dry_run:
            for row in old:
                del self._rows[row.id]
        return len(old), sum(len(row.body.encode()) for row in old)

    async def close(self) -> None:
        self._closed = True

    # --- helpers ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError("the webhook outbox is closed")

    def _heads(self) -> list[Delivery]:
        """The oldest pending delivery of each job."""
        self._check_open()
        heads: dict[str, Delivery] = {}
        for row in self._rows.values():
            if row.state is DeliveryState.PENDING and row.job_id not in heads:
                heads[row.job_id] = row
        return list(heads.values())

    def _attempted(self, delivery_id: str, now: float, **changes: Any) -> bool:
        self._check_open()
        row = self._rows.get(delivery_id)
        if row is None or row.state is not DeliveryState.PENDING:
            return False
        first = now if row.first_attempt_at is None else row.first_attempt_at
        updated = replace(
            row, attempts=row.attempts + 1, first_attempt_at=first, last_attempt_at=now
        )
        self._rows[delivery_id] = replace(updated, **changes)
        return True
