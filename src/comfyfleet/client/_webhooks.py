"""Checking a webhook the server sent, on the receiving side (the Standard Webhooks scheme).

Every delivery carries `webhook-id` (the same on each retry of one delivery: drop repeats by
it), `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`: one or more
space-separated `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. The key is the server's
`webhooks.secret`: base64 after a `whsec_` prefix, or else the secret's own UTF-8 bytes.

Written here from the scheme, not imported from the server package, so that the client needs
nothing but its own package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.client._errors import ComfyfleetClientError, WebhookVerificationError

_PREFIX = "whsec_"
_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@dataclass(frozen=True)
class WebhookEvent:
    """A verified delivery: `type` (`job.succeeded`, `job.failed`, `job.progress`, ...),
    `data` (the job and the event), and `id`, the delivery's id."""

    id: str
    type: str
    timestamp: str
    data: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> WebhookEvent:
    """Check a received webhook and return its payload; raise
    :class:`WebhookVerificationError` when it is not genuine.

    `headers` in any letter case; `body` exactly the bytes received (parse nothing before
    this). A timestamp more than `tolerance_s` from `now` (default: the clock) is refused, so a
    captured request cannot be replayed later."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    missing = [name for name in _HEADERS if not lowered.get(name)]
    if missing:
        raise WebhookVerificationError(f"webhook headers missing: {', '.join(missing)}")
    msg_id, stamp = lowered["webhook-id"], lowered["webhook-timestamp"].strip()
    if not (stamp.isascii() and stamp.isdigit()):
        raise WebhookVerificationError(f"webhook-timestamp {stamp[:40]!r} is not unix seconds")
    skew = (time.time() if now is None else now) - int(stamp)
    if abs(skew) > tolerance_s:
        age = "old" if skew > 0 else "in the future"
        raise WebhookVerificationError(
            f"webhook-timestamp is {abs(skew):.0f} s {age} (tolerance {tolerance_s:g} s)"
        )
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    expected = signature(secret, msg_id, int(stamp), raw).encode("ascii")
    offered = lowered["webhook-signature"].split()
    if not any(
        s.startswith("v1,") and hmac.compare_digest(s.encode("utf-8", "replace"), expected)
        for s in offered
    ):
        raise WebhookVerificationError(
            f"no valid signature for webhook {msg_id[:80]!r}: signed with another secret, "
            "or the body changed on the way"
        )
    return _event(msg_id, raw)


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _key(secret: str) -> bytes:
    if not secret:
        raise ComfyfleetClientError("the webhook secret is empty")
    if not secret.startswith(_PREFIX):
        return secret.encode("utf-8")
    try:
        key = base64.b64decode(secret.removeprefix(_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ComfyfleetClientError(
            "the webhook secret starts with 'whsec_' but the rest is not base64"
        ) from exc
    if not key:
        raise ComfyfleetClientError("the webhook secret 'whsec_' holds no key")
    return key


def _event(msg_id: str, body: bytes) -> WebhookEvent:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError(f"webhook {msg_id[:80]!r} is signed but not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookVerificationError(f"webhook {msg_id[:80]!r} is not a JSON object")
    data = payload.get("data")
    return WebhookEvent(
        id=msg_id,
        type=str(payload.get("type") or ""),
        timestamp=str(payload.get("timestamp") or ""),
        data=data if isinstance(data, dict) else {},
        raw=payload,
    )
