"""The Settings page's view model: API keys (`/v1/keys`), webhook deliveries
(`/v1/webhooks/deliveries`) and the effective settings (`/v1/config`, already redacted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from comfyfleet.dashboard._format import ago, duration, timestamp
from comfyfleet.dashboard._overview import webhook_target

KEY_TONES = {"active": "ok", "revoked": "off", "expired": "warn"}
DELIVERY_TONES = {"pending": "warn", "delivered": "ok", "failed": "bad"}


@dataclass(frozen=True)
class KeyRow:
    id: str
    name: str
    scopes: str
    status: str
    tone: str
    created: str
    expires: str
    hint: str
    revocable: bool


@dataclass(frozen=True)
class DeliveryRow:
    id: str
    job_id: str
    event: str
    state: str
    tone: str
    target: str
    attempts: int
    last_error: str
    next_try: str
    failed: bool


def key_rows(keys: list[dict[str, Any]], now: float) -> list[KeyRow]:
    return [
        KeyRow(
            id=str(k["id"]),
            name=str(k.get("name") or ""),
            scopes=", ".join(k.get("scopes") or []),
            status=str(k.get("status")),
            tone=KEY_TONES.get(str(k.get("status")), "warn"),
            created=ago(k.get("created_at"), now),
            expires="never" if k.get("expires_at") is None else timestamp(k["expires_at"]),
            hint=str(k.get("hint") or ""),
            revocable=k.get("status") == "active",
        )
        for k in keys
    ]


def delivery_rows(deliveries: list[dict[str, Any]], now: float) -> list[DeliveryRow]:
    rows = []
    for d in deliveries:
        rows.append(
            DeliveryRow(
                id=str(d.get("id")),
                job_id=str(d.get("job_id")),
                event=str(d.get("type") or ""),
                state=str(d.get("state")),
                tone=DELIVERY_TONES.get(str(d.get("state")), "warn"),
                target=webhook_target(str(d.get("url") or "")),
                attempts=int(d.get("attempts") or 0),
                last_error=str(d.get("last_error") or ""),
                next_try=_next_try(d, now),
                failed=d.get("state") == "failed",
            )
        )
    return rows


def _next_try(delivery: dict[str, Any], now: float) -> str:
    at = delivery.get("next_attempt_at")
    if delivery.get("state") != "pending" or not isinstance(at, int | float):
        return ""
    return "now" if at <= now else f"in {duration(at - now)}"


def settings_text(config: dict[str, Any]) -> str:
    """The settings as YAML, in the order they are declared (as `comfyfleet.yaml` reads)."""
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
