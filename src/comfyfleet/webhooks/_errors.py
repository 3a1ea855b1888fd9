"""The errors the webhooks package raises on purpose, all under :class:`WebhookError`."""

from __future__ import annotations

from comfyfleet.errors import ComfyfleetError


class WebhookError(ComfyfleetError):
    """Base of every webhook error."""


class WebhookVerificationError(WebhookError):
    """A received webhook is not signed with the expected secret, or is too old or too new.

    Raised by :func:`verify` on the receiving side: answer it with a 4xx and drop the message."""


class WebhookConfigError(WebhookError):
    """A job's `webhook` option, a target URL, or the signing secret is unusable."""


class DeliveryNotFound(WebhookError):
    """No delivery has that id."""

    def __init__(self, delivery_id: str) -> None:
        super().__init__(
            f"no webhook delivery '{delivery_id}'",
            hint="list deliveries with GET /v1/webhooks/deliveries to find its id",
        )
        self.delivery_id = delivery_id


class DeliveryNotFailed(WebhookError):
    """Only a dead-lettered (failed) delivery can be sent again by hand."""

    def __init__(self, delivery_id: str, state: str) -> None:
        hint = (
            "it is still being retried; wait for it to be delivered or to fail"
            if state == "pending"
            else "the receiver accepted it already; redelivering would repeat a handled message"
        )
        super().__init__(f"webhook delivery '{delivery_id}' is {state}, not failed", hint=hint)
        self.delivery_id = delivery_id
        self.state = state


class InvalidDeliveryCursor(WebhookError):
    """A list cursor that the outbox did not hand out."""

    def __init__(self, cursor: str) -> None:
        super().__init__(
            f"invalid delivery cursor '{cursor}'", hint="pass the cursor a listing returned"
        )
        self.cursor = cursor


class OutboxError(WebhookError):
    """The outbox cannot be opened or used (missing tables, closed, unreadable file)."""
