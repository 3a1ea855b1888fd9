"""The settings of media inputs: upload and fetch limits, and what URLs may reach.

Plain data, validated once; `net_policy()` turns the allowlists into the SSRF guard's policy.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from comfyfleet.assets._store import DEFAULT_MAX_UPLOAD_BYTES
from comfyfleet.errors import ConfigError
from comfyfleet.netguard import NetPolicy, parse_networks


class AssetSettings(BaseModel):
    """Media inputs of the job API (uploads, base64, URLs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_upload_bytes: int = Field(
        DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="largest upload or inline base64 input"
    )
    max_url_bytes: int = Field(
        DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="largest file fetched from a URL"
    )
    fetch_timeout_s: float = Field(60.0, gt=0, description="whole fetch of one URL, redirects in")
    max_redirects: int = Field(3, ge=0, le=20, description="redirect hops followed per URL")
    allow_private: bool = Field(
        False, description="let URLs reach loopback/private/link-local addresses (development)"
    )
    allowed_networks: tuple[str, ...] = Field(
        (), description="CIDRs that URLs may reach although not public, e.g. 10.20.0.0/16"
    )
    allowed_hosts: tuple[str, ...] = Field(
        (), description="host names URLs may reach whatever they resolve to ('.corp' = under it)"
    )

    @field_validator("allowed_networks", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _valid_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            parse_networks(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from exc
        return value

    def net_policy(self) -> NetPolicy:
        return NetPolicy.build(
            allow_private=self.allow_private,
            networks=self.allowed_networks,
            hosts=self.allowed_hosts,
        )
