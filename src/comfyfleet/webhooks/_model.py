"""What a webhook target and a delivery are, and which job events become which webhook types.

A delivery is one message (one job event) to one URL. Its life:

    pending -> delivered        (the receiver answered 2xx)
    pending -> failed           (retried for `retry_for_s` without success, or 410 Gone: the
                                 dead letter, kept and listed until someone redelivers it)
    failed  -> pending          (redeliver: a fresh retry window)

Webhook types are `job.<kind>` for the job store's event kinds, except the `status` events, which
take the new status: `job.queued`, `job.running`, `job.succeeded`, `job.failed`,
`job.cancelled`, and `job.requeued` for a retryable failure that put the job back in the queue.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from comfyfleet.webhooks._errors import WebhookConfigError

ALL_EVENTS = "*"
"""In a webhook's `events`: every event of the job, progress included."""

MAX_URL_LENGTH = 2048

KNOWN_EVENTS = frozenset(
    {
        "job.queued",
        "job.running",
        "job.succeeded",
        "job.failed",
        "job.cancelled",
        "job.requeued",
        "job.started",
        "job.progress",
        "job.executing",
        "job.executed",
        "job.downloading",
        "job.cancel_requested",
        "job.stalled",
    }
)
"""The webhook types a job can produce (see the module docstring); `events` may name only
these (with or without `job.`) or `*`, so that a typo is an error rather than silence."""


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class WebhookTarget:
    """Where a job's events go, and which of them (normalised `job.*` types, or `*`)."""

    url: str
    events: frozenset[str]

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events


@dataclass(frozen=True)
class NewDelivery:
    """A delivery as the relay creates it: the body is final (signed as is on every attempt)."""

    id: str
    event_seq: int
    job_id: str
    type: str
    url: str
    body: str


@dataclass(frozen=True)
class Delivery:
    """A snapshot of one stored delivery. `attempts` counts the current retry window's tries."""

    id: str
    seq: int
    event_seq: int
    job_id: str
    type: str
    url: str
    body: str
    state: DeliveryState
    attempts: int
    created_at: float
    next_attempt_at: float
    first_attempt_at: float | None
    last_attempt_at: float | None
    delivered_at: float | None
    failed_at: float | None
    last_status: int | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data

    def payload(self) -> Any:
        return json.loads(self.body)


def event_type(kind: str, data: Mapping[str, Any]) -> str:
    """The webhook type of a job event (see the module docstring)."""
    if kind == "status":
        status = str(data.get("status", "unknown"))
        if status == "queued" and data.get("retry"):
            return "job.requeued"
        return f"job.{status}"
    return f"job.{kind}"


def normalise_events(names: Iterable[str]) -> frozenset[str]:
    """`succeeded` and `job.succeeded` mean the same; `*` means every event. A name that is not
    a known type is an error listing the known ones."""
    wanted: set[str] = set()
    for name in names:
        cleaned = name.strip()
        if not cleaned or cleaned == "job.":
            raise WebhookConfigError("a webhook event name is empty", hint="e.g. 'job.succeeded'")
        if cleaned == ALL_EVENTS:
            wanted.add(ALL_EVENTS)
            continue
        full = cleaned if cleaned.startswith("job.") else f"job.{cleaned}"
        if full not in KNOWN_EVENTS:
            shown = cleaned[:100].encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            raise WebhookConfigError(
                f"unknown webhook event '{shown}'; known: {', '.join(sorted(KNOWN_EVENTS))}, *",
                hint="name a job event type, e.g. 'job.succeeded', or '*' for all",
            )
        wanted.add(full)
    return frozenset(wanted)


def parse_webhook(value: Any, *, default_events: Iterable[str]) -> WebhookTarget:
    """Check a job's `webhook` option (`{"url": ..., "events": [...] | None}`).

    Only the shape is checked here; where the URL points is checked by the sender on every
    attempt (host names resolve to other addresses over time), against the network policy."""
    if not isinstance(value, Mapping):
        raise WebhookConfigError(
            "'webhook' must be an object", hint='e.g. {"url": "https://example.com/hook"}'
        )
    unknown = sorted(set(value) - {"url", "events"})
    if unknown:
        raise WebhookConfigError(
            f"'webhook' has unknown fields: {', '.join(map(str, unknown))}",
            hint="it takes 'url' and optionally 'events'",
        )
    url = value.get("url")
    if not isinstance(url, str):
        raise WebhookConfigError("'webhook.url' must be a string (an http or https URL)")
    check_url_shape(url)
    events = value.get("events")
    if events is None:
        return WebhookTarget(url, normalise_events(default_events))
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events) or not events:
        raise WebhookConfigError(
            "'webhook.events' must be a non-empty list of event types",
            hint='e.g. ["job.succeeded", "job.failed", "job.progress"], or ["*"]',
        )
    return WebhookTarget(url, normalise_events(events))


def check_url_shape(url: str) -> None:
    """An absolute http(s) URL with a host, without credentials, of reasonable length."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookConfigError(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookConfigError(f"the webhook URL '{url[:200]}' is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(
            f"the webhook URL '{url[:200]}' is not an absolute http or https URL",
            hint="e.g. https://example.com/hooks/comfyfleet",
        )
    if parts.username is not None or parts.password is not None:
        raise WebhookConfigError(
            "the webhook URL must not carry a user name or password",
            hint="authenticate the sender with the signature instead",
        )
    if port == 0:
        raise WebhookConfigError(f"the webhook URL '{url[:200]}' has port 0")
