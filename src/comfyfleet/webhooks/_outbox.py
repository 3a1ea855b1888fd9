"""The outbox interface: durable webhook deliveries plus the relay's cursor.

The relay never sends anything itself: it turns job events into delivery rows, and moves its
cursor (the last event seq it handled) in the same transaction, so that after a crash each event
has become exactly one delivery, never none and never two. The sender then works from the rows
alone, which is what lets retries survive restarts.

Backends: :class:`~comfyfleet.webhooks.MemoryOutbox` (tests, `memory://` stores) and
:class:`~comfyfleet.webhooks.SqliteOutbox` (the job store's file) and
:class:`~comfyfleet.webhooks.PostgresOutbox` (the job store's database).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from comfyfleet.webhooks._errors import InvalidDeliveryCursor
from comfyfleet.webhooks._model import Delivery, DeliveryState, NewDelivery


class Outbox(Protocol):
    """Stored deliveries. Times are unix seconds (`time.time()`), as they outlive the process."""

    async def relay_cursor(self) -> int:
        """The seq of the last job event the relay turned into deliveries (0: none yet)."""
        ...

    async def relay(
        self, after: int, last: int, deliveries: Sequence[NewDelivery], *, now: float
    ) -> bool:
        """In one transaction: store `deliveries` and move the cursor from `after` to `last`.

        Returns False, writing nothing, when the cursor is no longer at `after` (another relay
        sharing the store got there first)."""
        ...

    async def due(self, now: float, limit: int) -> list[Delivery]:
        """Deliveries to attempt now: of each job only its oldest pending one (so a job's
        messages arrive in order), and only once its `next_attempt_at` has come."""
        ...

    async def next_due_at(self, *, after: float | None = None) -> float | None:
        """When the next delivery `due` could return falls due (of those due later than
        `after`, if given); None when there is none."""
        ...

    async def mark_delivered(self, delivery_id: str, *, status: int, now: float) -> bool:
        """Record a successful attempt. False when it is not pending (nothing changed)."""
        ...

    async def mark_retry(
        self,
        delivery_id: str,
        *,
        next_at: float,
        status: int | None,
        error: str | None,
        now: float,
    ) -> bool:
        """Record a failed attempt and when to try again. False when it is not pending."""
        ...

    async def mark_failed(
        self, delivery_id: str, *, status: int | None, error: str | None, now: float
    ) -> bool:
        """Record a last failed attempt: the delivery is dead-lettered. False if not pending."""
        ...

    async def list_deliveries(
        self, *, state: DeliveryState | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Delivery], str | None]:
        """Newest first; pass the returned cursor for the next page (None after the last)."""
        ...

    async def count(self, state: DeliveryState) -> int:
        """How many deliveries are in `state` (for pending and failed ones: the few)."""
        ...

    async def get(self, delivery_id: str) -> Delivery:
        """Raises DeliveryNotFound."""
        ...

    async def redeliver(self, delivery_id: str, *, now: float) -> Delivery:
        """Put a failed delivery back to pending, due now, with a fresh retry window.

        Raises DeliveryNotFound, or DeliveryNotFailed when it is pending or delivered."""
        ...

    async def prune(
        self, state: DeliveryState, before: float, *, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove the deliveries that became `state` (delivered or failed) before `before`:
        (how many, the UTF-8 bytes of their bodies). With `dry_run`, only count them. A pending
        delivery is never removed (ValueError for that state)."""
        ...

    async def close(self) -> None: ...


# --- shared by the backends -------------------------------------------------------------------


def cursor_seq(cursor: str | None) -> int | None:
    """The seq a list cursor stands for: listings continue below it."""
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise InvalidDeliveryCursor(cursor)
    return int(cursor)


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def page(rows: list[Delivery], limit: int) -> tuple[list[Delivery], str | None]:
    """Cut a listing fetched with one row too many: the extra row says a next page exists."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1].seq)


def spent(state: DeliveryState) -> str:
    """The name of the state's queries (`delivered`, `failed`): the states retention prunes."""
    if state is DeliveryState.PENDING:
        raise ValueError("pending deliveries are never pruned: they have yet to be sent")
    return str(state)
