"""The `auth` section of the settings: whether the gateway asks for API keys, and where they live.

Plain data, validated once, touching nothing: the key store is opened from it by
:func:`comfyfleet.auth.open_key_store` when a server or a `keys` command starts.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

MIN_STATIC_KEY_LENGTH = 32
"""A static key is chosen by a person; this many characters keeps guessing it out of reach."""


class AuthSettings(BaseModel):
    """API keys for the gateway.

    `api_key` is one static key for simple deployments (one client, no key file to manage). It is
    meant to come from the environment (`COMFYFLEET_AUTH__API_KEY`), not from the settings file;
    it is hashed in memory when the key store opens and is never written anywhere. It is accepted
    next to the keys of the key file, and cannot be listed or revoked (change the variable and
    restart instead).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=False, description="ask every request for `Authorization: Bearer KEY`"
    )
    public_paths: tuple[str, ...] = Field(
        default=("/health",), description="exact paths answered without a key"
    )
    keys_file: Path | None = Field(
        default=None, description="the key file (default: WORKSPACE/state/api_keys.json)"
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="one static key, from env COMFYFLEET_AUTH__API_KEY (32+ characters)",
    )

    @field_validator("public_paths")
    @classmethod
    def _absolute_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"public path {path!r} must start with '/'")
        return value

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_STATIC_KEY_LENGTH:
            raise ValueError(
                f"the static API key must be at least {MIN_STATIC_KEY_LENGTH} characters "
                "(make one with `comfyfleet keys create`, or any 32+ random characters)"
            )
        return value
