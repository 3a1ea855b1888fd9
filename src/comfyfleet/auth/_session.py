"""Browser sessions: a signed cookie that stands for an API key, and the checks that go with it.

Browsers cannot add `Authorization: Bearer` to a page load, a script or a WebSocket, so a person
signs in once with a key (`/login`, see `_login`) and the browser then sends a cookie instead.

The cookie is stateless and holds no secret: `<key id>.<expiry>.<mac>`, the MAC an HMAC-SHA256
under the server's session secret over the key id, the expiry *and the key's stored digest*.
So it is:

- unforgeable and unchangeable without the secret (changing the expiry breaks the MAC);
- expiring on its own (`auth.session_ttl_s`), whatever the browser does with it;
- tied to the key: every request looks the key up again (the key file is re-read when it
  changes), so revoking or expiring the key ends every session made with it at once, and a key
  that is replaced (the static key changed) no longer matches the digest;
- shared by every gateway that has the same secret, and kept across restarts, since nothing
  is held in memory.

What this does not give is a server-side logout of one session: `/logout` clears the browser's
cookie, and a copied cookie stays valid until it expires or its key is revoked.

Cookies are sent by the browser on its own, so a page of another site can make a signed-in
browser send requests here (CSRF). A cookie therefore authenticates an unsafe request
(anything but GET, HEAD and OPTIONS) and a WebSocket only when the browser says it comes from
this very origin (`Origin`, or `Sec-Fetch-Site: same-origin`); see :func:`same_origin`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from comfyfleet.auth._errors import KeyNotFound
from comfyfleet.auth._keys import KeyRecord
from comfyfleet.auth._secrets import kept_secret
from comfyfleet.auth._store import STATIC_KEY_ID, KeyStore

SESSION_COOKIE = "comfyfleet_session"
SESSION_SECRET_FILE = "session_secret"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_SECRET_BYTES = 32
_VERSION = b"comfyfleet-session-v1"
_COOKIE = re.compile(r"([a-z0-9]{1,32})\.([0-9]{1,12})\.([0-9a-f]{64})")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}

Scope = MutableMapping[str, Any]
KeyLookup = Callable[[str], KeyRecord | None]
"""The active key of an id (None: unknown, revoked or expired); raises
:class:`~comfyfleet.errors.ComfyfleetError` when keys cannot be read."""

log = logging.getLogger("comfyfleet.auth")


class Sessions:
    """Issue and check session cookies. `lookup` finds a key's current record by id."""

    def __init__(
        self,
        secret: bytes,
        lookup: KeyLookup,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("a session secret needs at least 16 bytes")
        self._secret = secret
        self._lookup = lookup
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, record: KeyRecord) -> str:
        """A cookie value for `record`, valid for `ttl_s` or until the key ends, if sooner."""
        expires = int(self._clock() + self.ttl_s)
        if record.expires_at is not None:
            expires = min(expires, int(record.expires_at))
        return f"{record.id}.{expires}.{self._mac(record, expires)}"

    def verify(self, value: str) -> KeyRecord | None:
        """The key a cookie value stands for, or None when it is malformed, forged, expired, or
        its key is no longer valid."""
        match = _COOKIE.fullmatch(value)
        if match is None:
            return None
        key_id, expires = match.group(1), int(match.group(2))
        if expires <= self._clock():
            return None
        record = self._lookup(key_id)
        if record is None:
            return None
        if not hmac.compare_digest(match.group(3), self._mac(record, expires)):
            return None
        return record

    def _mac(self, record: KeyRecord, expires: int) -> str:
        message = b"\0".join((_VERSION, record.id.encode(), str(expires).encode(), record.digest))
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def key_lookup(store: KeyStore, static_key: str | None) -> KeyLookup:
    """Look up keys by id in `store`; the static key (`auth.api_key`) by verifying its text,
    which only the server holds."""

    def lookup(key_id: str) -> KeyRecord | None:
        if key_id == STATIC_KEY_ID:
            return store.verify(static_key) if static_key else None
        try:
            record = store.get(key_id)
        except KeyNotFound:
            return None
        if record.revoked or record.expired(time.time()):
            return None
        return record

    return lookup


def session_secret(state_dir: Path, configured: str | None = None) -> bytes:
    """The secret session cookies are signed with: `configured` (the settings' secret, for
    gateways on several hosts), else `state/session_secret`, made once (mode 0600) and kept so
    that sessions survive a restart."""
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    return kept_secret(state_dir / SESSION_SECRET_FILE)


# --- reading requests -------------------------------------------------------------------------


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` in lower case)."""
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def session_cookie(scope: Scope) -> str | None:
    """The value of the session cookie the request carries, if any."""
    for key, value in scope.get("headers") or ():
        if key.lower() != b"cookie":
            continue
        text: str = value.decode("latin-1")
        for part in text.split(";"):  # by hand: one malformed cookie spoils none
            name, _, found = part.strip().partition("=")
            if name.strip() == SESSION_COOKIE:
                return found.strip().strip('"')
    return None


def without_session_cookie(
    headers: Iterable[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """`headers` with the session cookie taken out of every `Cookie` header (and a header left
    empty dropped), so that no handler can log it and no proxy can pass it on."""
    kept = []
    for key, value in headers:
        if key.lower() == b"cookie":
            parts = [
                part
                for part in value.split(b";")
                if part.strip().partition(b"=")[0].strip() != SESSION_COOKIE.encode()
            ]
            value = b";".join(parts).strip()
            if not value:
                continue
        kept.append((key, value))
    return kept


def same_origin(scope: Scope) -> bool:
    """Whether the browser says the request comes from a page of this very site.

    `Sec-Fetch-Site: same-origin` is set by the browser and cannot be set by a page's script.
    Otherwise the `Origin` header's host and port must be those the request was sent to
    (`Host`); the scheme is left out of the comparison because a TLS proxy in front may hand
    the request on over plain HTTP. A request with neither header is not same-origin."""
    if (header(scope, b"sec-fetch-site") or "").strip().lower() == "same-origin":
        return True
    origin = (header(scope, b"origin") or "").strip()
    host = (header(scope, b"host") or "").strip()
    if not origin or origin == "null" or not host:
        return False
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False
    return _authority(parts.scheme, parts.netloc) == _authority(parts.scheme, host)


def cross_site(scope: Scope) -> bool:
    """Whether a browser marked the request as coming from another site or origin: a present
    `Origin` that is not this one, or `Sec-Fetch-Site` other than same-origin or none."""
    fetch_site = (header(scope, b"sec-fetch-site") or "").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return True
    if header(scope, b"origin") is None:
        return False
    return not same_origin(scope)


def _authority(scheme: str, netloc: str) -> str:
    netloc = netloc.lower().rpartition("@")[2]
    default = _DEFAULT_PORTS.get(scheme.lower())
    if default and netloc.endswith(f":{default}"):
        netloc = netloc[: -len(default) - 1]
    return netloc


def is_https(scope: Scope) -> bool:
    """Whether the client reached us over TLS (as uvicorn saw it, forwarded headers applied)."""
    return scope.get("scheme") in ("https", "wss")
