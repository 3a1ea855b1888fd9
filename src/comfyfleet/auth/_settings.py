"""The `auth` section of the settings: whether the gateway asks for API keys, and where they live.

Plain data, validated once, touching nothing: the key store is opened from it by
:func:`comfyfleet.auth.open_key_store` when a server or a `keys` command starts.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from comfyfleet.auth._keys import ADMIN, SCOPES

DEFAULT_PUBLIC_PATHS = ("/health", "/api/v2/health")
"""Answered without a key: the process probe, and Comfy API v2's health (its contract leaves
that route open, so load balancers and SDK health checks need no key)."""

MIN_STATIC_KEY_LENGTH = 32
"""A static key is chosen by a person; this many characters keeps guessing it out of reach."""


class AuthSettings(BaseModel):
    """API keys for the gateway.

    `api_key` is one static key for simple deployments (one client, no key file to manage). It is
    meant to come from the environment (`COMFYFLEET_AUTH__API_KEY`), not from the settings file;
    it is hashed in memory when the key store opens and is never written anywhere. It is accepted
    next to the keys of the key file, and cannot be listed or revoked (change the variable and
    restart instead).

    Browsers cannot send a Bearer header, so with `browser_login` a person signs in once at
    `/login` with a key and gets a session cookie (`session_ttl_s` long, signed with
    `session_secret` or, without it, a secret made once in `WORKSPACE/state/`). The ComfyUI
    editors behind the gateway (`/instances/...` and the home instance) run any graph and read
    every output, so they need the `ui_scope` scope.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=False, description="ask every request for `Authorization: Bearer KEY`"
    )
    public_paths: tuple[str, ...] = Field(
        default=DEFAULT_PUBLIC_PATHS, description="exact paths answered without a key"
    )
    keys_file: Path | None = Field(
        default=None, description="the key file (default: WORKSPACE/state/api_keys.json)"
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="one static key, from env COMFYFLEET_AUTH__API_KEY (32+ characters)",
    )

    browser_login: bool = Field(
        default=True,
        description="offer browsers /login and a session cookie (Basic auth works either way)",
    )
    session_ttl_s: float = Field(
        default=12 * 3600.0, gt=0, description="how long a browser session lasts, in seconds"
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description=(
            "what session cookies are signed with, from env COMFYFLEET_AUTH__SESSION_SECRET "
            "(32+ characters; the same on every gateway behind one address)"
        ),
    )
    ui_scope: str = Field(
        default=ADMIN,
        description="the scope a key needs to open the ComfyUI editors behind the gateway",
    )

    @field_validator("ui_scope")
    @classmethod
    def _known_scope(cls, value: str) -> str:
        if value not in SCOPES:
            raise ValueError(f"ui_scope must be one of {', '.join(SCOPES)}, not {value!r}")
        return value

    @field_validator("public_paths")
    @classmethod
    def _absolute_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"public path {path!r} must start with '/'")
        return value

    @field_validator("session_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_STATIC_KEY_LENGTH:
            raise ValueError(
                f"the session secret must be at least {MIN_STATIC_KEY_LENGTH} characters "
                "(e.g. `openssl rand -hex 32`)"
            )
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
