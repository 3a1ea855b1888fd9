"""`/v1/webhooks/deliveries`: see what was sent where, what failed and why; send a failed one again.

Dead letters (deliveries that ran out of retries, or got 410 Gone) stay in the outbox until someone
looks: list them with `?state=failed`, fix the receiver, then `POST .../redeliver` each. Errors
raise :class:`ApiError`, so they have the gateway's one error shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from comfyfleet.auth import ADMIN
from comfyfleet.gateway._errors import ApiError
from comfyfleet.gateway._tenancy import needs
from comfyfleet.webhooks import (
    Delivery,
    DeliveryNotFailed,
    DeliveryNotFound,
    DeliveryState,
    InvalidDeliveryCursor,
    Outbox,
)

_PREFIX = "/v1/webhooks/deliveries"


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    """A delivery as the API shows it: the stored row, its payload parsed, and its links."""
    data = delivery.to_dict()
    data.pop("body")
    data["payload"] = delivery.payload()
    data["urls"] = {
        "self": f"{_PREFIX}/{delivery.id}",
        "redeliver": f"{_PREFIX}/{delivery.id}/redeliver",
        "job": f"/v1/jobs/{delivery.job_id}",
    }
    return data


def webhooks_router(
    outbox: Outbox,
    *,
    wake: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The routes over `outbox`. `wake` is called after a redeliver (pass the running
    WebhookService's `wake_sender`, so the delivery goes out now rather than at the next poll)."""
    # Deliveries carry every key's job events and URLs: for admin keys only.
    router = APIRouter(tags=["webhooks"], dependencies=[Depends(needs(ADMIN))])

    async def find(delivery_id: str) -> Delivery:
        try:
            return await outbox.get(delivery_id)
        except DeliveryNotFound as exc:
            raise ApiError(404, "delivery_not_found", exc.message, {"id": delivery_id}) from exc

    @router.get(_PREFIX, summary="List webhook deliveries, newest first")
    async def list_deliveries(
        state: DeliveryState | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        try:
            rows, next_cursor = await outbox.list_deliveries(
                state=state, limit=limit, cursor=cursor
            )
        except InvalidDeliveryCursor as exc:
            raise ApiError(400, "invalid_cursor", exc.message, {"cursor": cursor}) from exc
        return {"deliveries": [delivery_view(row) for row in rows], "next_cursor": next_cursor}

    @router.get(f"{_PREFIX}/{{delivery_id}}", summary="One webhook delivery and its last error")
    async def read_delivery(delivery_id: str) -> dict[str, Any]:
        return delivery_view(await find(delivery_id))

    @router.post(
        f"{_PREFIX}/{{delivery_id}}/redeliver",
        summary="Send a failed (dead-lettered) delivery again, with a fresh retry window",
    )
    async def redeliver(delivery_id: str) -> dict[str, Any]:
        try:
            delivery = await outbox.redeliver(delivery_id, now=clock())
        except DeliveryNotFound as exc:
            raise ApiError(404, "delivery_not_found", exc.message, {"id": delivery_id}) from exc
        except DeliveryNotFailed as exc:
            raise ApiError(
                409,
                "delivery_not_failed",
                exc.message,
                {"id": delivery_id, "state": exc.state, "hint": exc.hint},
            ) from exc
        wake()
        return delivery_view(delivery)

    return router
