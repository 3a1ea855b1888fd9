"""Signing webhooks the Standard Webhooks way, and checking them on the receiving side.

Each request carries three headers: `webhook-id` (the delivery id, the same on every retry, so a
receiver can drop repeats), `webhook-timestamp` (unix seconds of this attempt, so a captured
request cannot be replayed later) and `webhook-signature`: `v1,` + base64 of
HMAC-SHA256(key, "{id}.{timestamp}.{body}"). Several space-separated signatures may be sent (while
a secret is being rotated); one valid signature is enough.

Secrets look like `whsec_` + base64 of the key bytes. Any other string is accepted too: its UTF-8
bytes are then the key (handy for a passphrase from a vault, but a random whsec_ key is better).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from comfyfleet.webhooks._errors import WebhookConfigError, WebhookVerificationError

SECRET_PREFIX = "whsec_"
_KEY_BYTES = 32


def generate_secret() -> str:
    """A new random signing secret (`whsec_` + base64 of 32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for."""
    if not secret:
        raise WebhookConfigError("the webhook signing secret is empty")
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode("utf-8")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookConfigError(
            "the webhook signing secret starts with 'whsec_' but the rest is not base64",
            hint="use a secret from generate_secret(), or one without the 'whsec_' prefix",
        ) from exc
    if not key:
        raise WebhookConfigError("the webhook signing secret 'whsec_' holds no key")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The `webhook-signature` value (`v1,<base64>`) for one request."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + raw
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secret: str, msg_id: str, body: bytes | str, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (timestamp: now)."""
    at = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": sign(secret, msg_id, at, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> None:
    """Check a received webhook; returns quietly when it is genuine.

    `headers` may use any letter case; `body` must be the raw bytes received (parse the JSON only
    after this returns). Raises WebhookVerificationError when a header is missing, the timestamp
    is more than `tolerance_s` away from `now` (default: the clock), or no `v1` signature in the
    header matches (compared in constant time)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [
        name
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
        if not lowered.get(name)
    ]
    if missing:
        raise WebhookVerificationError(
            f"webhook headers missing: {', '.join(missing)}",
            hint="is the sender signing with Standard Webhooks headers?",
        )
    msg_id, stamp = lowered["webhook-id"], lowered["webhook-timestamp"].strip()
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError(f"webhook-timestamp '{stamp[:40]}' is not unix seconds")
    timestamp = int(stamp)
    skew = (time.time() if now is None else now) - timestamp
    if abs(skew) > tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp is {abs(skew):.0f} s {'old' if skew > 0 else 'in the future'}"
            f" (tolerance {tolerance_s:g} s)",
            hint="a replayed request, or a clock out of sync on either side",
        )
    expected = sign(secret, msg_id, timestamp, body).encode("ascii")
    for candidate in lowered["webhook-signature"].split():
        if candidate.startswith("v1,") and hmac.compare_digest(
            candidate.encode("utf-8", "replace"), expected
        ):
            return
    raise WebhookVerificationError(
        f"no valid signature for webhook '{msg_id[:80]}'",
        hint="the body was changed on the way, or it was signed with another secret",
    )
