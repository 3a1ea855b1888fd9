"""How webhooks are signed and retried: plain frozen data, validated once and passed in."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from comfyfleet.webhooks._errors import WebhookConfigError
from comfyfleet.webhooks._signing import secret_key

DEFAULT_EVENTS: tuple[str, ...] = ("job.succeeded", "job.failed", "job.cancelled")
"""What a webhook receives when its `events` list is left out: how each job ended."""


class WebhookSettings(BaseModel):
    """Settings of webhook delivery (the `webhooks:` section of the settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    secret: SecretStr | None = Field(
        None,
        description=(
            "signing secret: 'whsec_' + base64 of the key (see generate_secret), or any other "
            "string, whose UTF-8 bytes are then the key"
        ),
    )
    retry_for_s: float = Field(
        86400.0, gt=0, description="keep retrying this long after the first attempt, then fail"
    )
    initial_backoff_s: float = Field(5.0, gt=0, description="first retry delay (before jitter)")
    max_backoff_s: float = Field(3600.0, gt=0, description="the retry delay stops growing here")
    timeout_s: float = Field(10.0, gt=0, description="one HTTP attempt, connect to last byte")
    concurrency: int = Field(8, ge=1, description="jobs whose webhooks are sent at the same time")
    allow_private_targets: bool = Field(
        False, description="allow URLs that resolve to loopback, private or link-local addresses"
    )
    default_events: tuple[str, ...] = Field(
        DEFAULT_EVENTS, description="event types sent when a job's webhook names none"
    )
    relay_batch: int = Field(500, ge=1, description="job events turned into deliveries at once")
    poll_s: float = Field(
        2.0, gt=0, description="look for events written by other processes this often"
    )
    stop_grace_s: float = Field(
        5.0, ge=0, description="on stop, let attempts already on the wire finish this long"
    )

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must not be below initial_backoff_s")
        if self.secret is not None and self.secret.get_secret_value():
            try:
                secret_key(self.secret.get_secret_value())
            except WebhookConfigError as exc:
                raise ValueError(f"secret: {exc}") from None
        return self

    def signing_secret(self) -> str:
        """The secret, or an error that says how to set one (webhooks are never sent unsigned)."""
        if self.secret is None or not self.secret.get_secret_value():
            raise WebhookConfigError(
                "webhooks need a signing secret and none is set",
                hint="set webhooks.secret (comfyfleet.webhooks.generate_secret() makes one)",
            )
        return self.secret.get_secret_value()
