"""What an API key is: its text format, the record kept of it, and its digest.

A key reads `cf_<id>_<secret>`: `id` is 8 lowercase letters and digits that name the key in lists,
logs and revocations (it is not secret), `secret` is 32 random bytes from :mod:`secrets`, URL-safe
base64 (43 characters). Only a SHA-256 digest of the whole key is stored, with the last four
characters as a hint to tell keys apart.

Why a plain SHA-256 and no slow KDF (bcrypt, scrypt, argon2): slow hashes protect *passwords*,
which are guessable, by making each guess expensive. A key here carries 256 bits from the
operating system's random source; no number of guesses, fast or slow, finds one from its digest.
A slow hash would only make every request pay tens of milliseconds of CPU, and make the gateway
easy to overload with bogus keys.

What a key may do is its *scopes*: `submit` (send jobs and assets, cancel its own jobs), `read`
(read its own jobs and assets) and `admin` (everything: every key's jobs and assets, model
changes, webhook deliveries). A key made without `--scope` gets `submit` and `read`; so does an
entry of a key file written before scopes existed, so that upgrading closes the gap between keys
at once rather than leaving every old key able to see every job.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass, field, replace
from typing import Any

from comfyfleet.auth._errors import AuthError, KeyStoreError

KEY_PREFIX = "cf_"
ID_LENGTH = 8
SECRET_BYTES = 32
HINT_LENGTH = 4
_ID_ALPHABET = string.ascii_lowercase + string.digits
_KEY = re.compile(r"cf_([a-z0-9]{8})_([A-Za-z0-9_-]{43,})")

SUBMIT = "submit"
READ = "read"
ADMIN = "admin"
SCOPES = (SUBMIT, READ, ADMIN)
"""Every scope, in the order they are shown."""
DEFAULT_SCOPES = frozenset({SUBMIT, READ})
"""What a key gets when none are named, and what a key file entry without scopes means."""


@dataclass(frozen=True)
class KeyRecord:
    """What is kept of a key: never the key itself. Times are `time.time()` seconds."""

    id: str
    name: str
    digest: bytes = field(repr=False)
    created_at: float
    hint: str
    expires_at: float | None = None
    revoked_at: float | None = None
    scopes: frozenset[str] = DEFAULT_SCOPES
    max_running: int | None = None
    """Jobs of this key that may run at once (None: the server's default), so that one client
    cannot take every GPU while others wait."""

    def allows(self, scope: str) -> bool:
        """Whether the key may do what `scope` covers (`admin` covers every scope)."""
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def status(self, now: float) -> str:
        """`active`, `revoked` or `expired` (revoked wins: it is what someone chose)."""
        if self.revoked:
            return "revoked"
        return "expired" if self.expired(now) else "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "sha256": self.digest.hex(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
            "hint": self.hint,
            "scopes": sorted_scopes(self.scopes),
            "max_running": self.max_running,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> KeyRecord:
        """Read one entry of the key file; `where` names it in the error."""
        if not isinstance(data, dict):
            raise KeyStoreError(f"{where} is not a JSON object")
        try:
            digest = bytes.fromhex(data["sha256"])
            record = cls(
                id=str(data["id"]),
                name=str(data["name"]),
                digest=digest,
                created_at=float(data["created_at"]),
                hint=str(data.get("hint", "")),
                expires_at=_optional_float(data.get("expires_at")),
                revoked_at=_optional_float(data.get("revoked_at")),
                scopes=_stored_scopes(data.get("scopes")),
                max_running=_optional_limit(data.get("max_running")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyStoreError(
                f"{where} is not a valid key entry ({type(exc).__name__}: {exc})",
                hint="fix the entry, or remove it and create the key again",
            ) from exc
        if len(digest) != hashlib.sha256().digest_size:
            raise KeyStoreError(f"{where} has a 'sha256' of the wrong length")
        if data.get("revoked") and record.revoked_at is None:
            record = replace(record, revoked_at=record.created_at)
        return record

    def public_view(self, now: float) -> dict[str, Any]:
        """What may be shown to people: no digest."""
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "status": self.status(now),
            "hint": self.hint,
            "scopes": sorted_scopes(self.scopes),
            "max_running": self.max_running,
        }


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def sorted_scopes(scopes: frozenset[str]) -> list[str]:
    return [scope for scope in SCOPES if scope in scopes]


def parse_scopes(values: list[str]) -> frozenset[str]:
    """Scopes from `--scope` values, each one scope or a comma list (`submit,read`)."""
    named = {part.strip().lower() for value in values for part in value.split(",")}
    named.discard("")
    unknown = sorted(named - set(SCOPES))
    if unknown:
        raise AuthError(
            f"unknown scope {', '.join(map(repr, unknown))}",
            hint=f"a key's scopes are {', '.join(SCOPES)}",
        )
    if not named:
        raise AuthError("a key needs at least one scope", hint=f"choose from {', '.join(SCOPES)}")
    return frozenset(named)


def _stored_scopes(value: Any) -> frozenset[str]:
    """The scopes of a key file entry; an entry from before scopes existed has the defaults."""
    if value is None:
        return DEFAULT_SCOPES
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("'scopes' must be a list of strings")
    try:
        return parse_scopes(value)
    except AuthError as exc:
        raise ValueError(exc.message) from None


def new_key_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


def new_key(key_id: str) -> str:
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def key_id_of(token: str) -> str | None:
    """The id part of a well-formed key, None for anything else."""
    match = _KEY.fullmatch(token)
    return match.group(1) if match else None


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def hint_of(token: str) -> str:
    return token[-HINT_LENGTH:]


def _optional_limit(value: Any) -> int | None:
    """A stored running limit: a positive whole number, or absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_running must be a positive integer, not {value!r}")
    return value
