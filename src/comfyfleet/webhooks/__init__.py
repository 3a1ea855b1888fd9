"""Webhooks: job events POSTed to the URL a job names, signed, retried, and never lost.

A job submitted with `webhook: {"url": ..., "events": [...]}` gets its events (by default how
it ended: `job.succeeded`, `job.failed`, `job.cancelled`) POSTed as
`{"type", "timestamp", "data"}`, signed the Standard Webhooks way (:func:`verify` checks them on
the receiving side). Delivery goes through a durable outbox: the :class:`Relay` turns job events
into delivery rows exactly once, the :class:`Sender` retries each with exponential backoff and
full jitter for `retry_for_s`, then dead-letters it (listed, redeliverable by hand). A job's
deliveries arrive in order; different jobs' go in parallel. :class:`WebhookService` runs both.
"""

from __future__ import annotations

from comfyfleet.webhooks._errors import (
    DeliveryNotFailed,
    DeliveryNotFound,
    InvalidDeliveryCursor,
    OutboxError,
    WebhookConfigError,
    WebhookError,
    WebhookVerificationError,
)
from comfyfleet.webhooks._memory import MemoryOutbox
from comfyfleet.webhooks._model import (
    ALL_EVENTS,
    KNOWN_EVENTS,
    Delivery,
    DeliveryState,
    NewDelivery,
    WebhookTarget,
    event_type,
    parse_webhook,
)
from comfyfleet.webhooks._outbox import Outbox
from comfyfleet.webhooks._postgres import PostgresOutbox
from comfyfleet.webhooks._relay import EventSource, JobView, Relay, default_view
from comfyfleet.webhooks._sender import AttemptWatch, Outcome, Sender, backoff_delay
from comfyfleet.webhooks._service import WebhookService
from comfyfleet.webhooks._settings import DEFAULT_EVENTS, WebhookSettings
from comfyfleet.webhooks._signing import generate_secret, sign, signed_headers, verify
from comfyfleet.webhooks._sqlite import SqliteOutbox

__all__ = [
    "ALL_EVENTS",
    "DEFAULT_EVENTS",
    "KNOWN_EVENTS",
    "AttemptWatch",
    "Delivery",
    "DeliveryNotFailed",
    "DeliveryNotFound",
    "DeliveryState",
    "EventSource",
    "InvalidDeliveryCursor",
    "JobView",
    "MemoryOutbox",
    "NewDelivery",
    "Outbox",
    "OutboxError",
    "Outcome",
    "PostgresOutbox",
    "Relay",
    "Sender",
    "SqliteOutbox",
    "WebhookConfigError",
    "WebhookError",
    "WebhookService",
    "WebhookSettings",
    "WebhookTarget",
    "WebhookVerificationError",
    "backoff_delay",
    "default_view",
    "event_type",
    "generate_secret",
    "parse_webhook",
    "sign",
    "signed_headers",
    "verify",
]
