"""Where outputs go, as one frozen settings object: a URL plus the options its backend reads.

    file://                     local disk, under the folder the caller passes (the default)
    file:///srv/outputs         local disk, under that absolute folder
    s3://bucket/prefix          S3 or any S3-compatible store (`endpoint_url`)
    az://container/prefix       Azure Blob Storage (or Azurite)
    https://host/prefix/        HTTP PUT of each object to prefix + key

Secrets are `SecretStr`, so printing or logging the settings shows `**********`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from comfyfleet.storage._errors import InvalidKey
from comfyfleet.storage._keys import check_prefix

MIB = 1024 * 1024

Kind = Literal["local", "s3", "azure", "http"]

_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]$|^\$root$")
FORMS = "file://, file:///ABSOLUTE/DIR, s3://BUCKET[/PREFIX], az://CONTAINER[/PREFIX], https://HOST/PREFIX/"


@dataclass(frozen=True)
class Target:
    """A storage URL taken apart."""

    kind: Kind
    container: str = ""
    """The bucket (S3) or container (Azure); empty for the other kinds."""
    prefix: str = ""
    """'' or 'a/b/': put in front of every key (S3, Azure)."""
    location: str = ""
    """The folder (local; '' means the caller's default) or the PUT prefix URL (http)."""


def parse_storage_url(url: str) -> Target:
    """Take a storage URL apart; ValueError (with the accepted forms) when it is not one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"'{url}': a file URL names a folder on this machine, not a host")
        if parts.path not in ("", "/") and not parts.path.startswith("/"):
            raise ValueError(f"'{url}': the folder must be absolute (file:///srv/outputs)")
        return Target("local", location=parts.path if parts.path not in ("", "/") else "")
    if scheme in ("s3", "az"):
        return _bucket_target(url, scheme)
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise ValueError(f"'{url}': no host")
        if parts.query or parts.fragment:
            raise ValueError(
                "an HTTP storage URL cannot have a query string or fragment; "
                "put tokens into http_headers"
            )
        prefix = url if url.endswith("/") else url + "/"
        return Target("http", location=prefix)
    raise ValueError(f"unknown storage URL '{url}': use {FORMS}")


def _bucket_target(url: str, scheme: str) -> Target:
    parts = urlsplit(url)
    name = parts.netloc
    if scheme == "s3" and not _BUCKET.match(name):
        raise ValueError(f"'{url}': '{name}' is not a valid bucket name")
    if scheme == "az" and not _CONTAINER.match(name):
        raise ValueError(
            f"'{url}': '{name}' is not a valid container name "
            "(3-63 lowercase letters, digits and hyphens)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"'{url}': no query string or fragment allowed")
    try:
        prefix = check_prefix(parts.path)
    except InvalidKey as exc:
        raise ValueError(f"'{url}': bad prefix: {exc.message}") from exc
    return Target("s3" if scheme == "s3" else "azure", container=name, prefix=prefix)


class StorageSettings(BaseModel):
    """Where job outputs are stored, and how input URLs (s3://, az://) are read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(default="file://", description=FORMS)
    public_base_url: str | None = Field(
        default=None,
        description="serve results from here (+ key, prefix included) instead of signed URLs",
    )
    # --- S3 ------------------------------------------------------------------------------
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, R2 ...)"
    )
    region: str | None = Field(default=None, description="default: the AWS config chain")
    profile: str | None = Field(default=None, description="AWS config profile")
    access_key_id: str | None = Field(default=None, description="default: the AWS credential chain")
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    multipart_threshold_bytes: int = Field(
        default=8 * MIB, ge=5 * MIB, description="S3 and Azure: larger uploads go up in parts"
    )
    multipart_chunk_bytes: int = Field(
        default=8 * MIB, ge=5 * MIB, le=4000 * MIB, description="S3 and Azure: size of a part"
    )
    # --- Azure ---------------------------------------------------------------------------
    azure_connection_string: SecretStr | None = Field(
        default=None, description="default: $AZURE_STORAGE_CONNECTION_STRING"
    )
    azure_account_url: str | None = Field(
        default=None, description="https://ACCOUNT.blob.core.windows.net"
    )
    azure_account_key: SecretStr | None = None
    azure_sas_token: SecretStr | None = None
    # --- HTTP PUT ------------------------------------------------------------------------
    http_headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="sent with every request (Authorization ...)"
    )
    # --- every backend -------------------------------------------------------------------
    presign_expiry_s: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="lifetime of signed read URLs"
    )
    attempts: int = Field(default=3, ge=1, le=20, description="tries per call on retryable errors")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _known_url(cls, value: str) -> str:
        parse_storage_url(value)
        return value

    @model_validator(mode="after")
    def _key_pair(self) -> StorageSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        return self

    @property
    def target(self) -> Target:
        return parse_storage_url(self.url)
