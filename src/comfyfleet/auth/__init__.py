"""API keys for the gateway: the key store, the ASGI middleware that checks them, log redaction.

With `auth.enabled`, every route but the public ones (`/health`) needs `Authorization: Bearer KEY`
(or Basic auth with the key as the password, or a browser session from `/login`).
Keys are made with `comfyfleet keys create`, kept only as SHA-256 digests in
`WORKSPACE/state/api_keys.json` (mode 0600), compared in constant time, and never logged.
Each key has scopes (`submit`, `read`, `admin`) that the gateway's routes check.
"""

from __future__ import annotations

from comfyfleet.auth._errors import AuthError, KeyNotFound, KeyStoreError
from comfyfleet.auth._keys import (
    ADMIN,
    DEFAULT_SCOPES,
    READ,
    SCOPES,
    SUBMIT,
    KeyRecord,
    parse_scopes,
    sorted_scopes,
)
from comfyfleet.auth._login import LOGIN_PATH, LOGOUT_PATH, safe_next
from comfyfleet.auth._middleware import (
    SCOPE_KEY,
    STATE_KEY,
    ApiKeyMiddleware,
    KeyVerifier,
    key_of,
)
from comfyfleet.auth._redact import RedactKeys, redact
from comfyfleet.auth._secrets import kept_secret
from comfyfleet.auth._session import (
    SESSION_COOKIE,
    Sessions,
    key_lookup,
    same_origin,
    session_secret,
    without_session_cookie,
)
from comfyfleet.auth._settings import DEFAULT_PUBLIC_PATHS, AuthSettings
from comfyfleet.auth._store import (
    KEYS_FILE_NAME,
    STATIC_KEY_ID,
    IssuedKey,
    KeyStore,
    keys_file_path,
    open_key_store,
)

__all__ = [
    "ADMIN",
    "DEFAULT_PUBLIC_PATHS",
    "DEFAULT_SCOPES",
    "KEYS_FILE_NAME",
    "LOGIN_PATH",
    "LOGOUT_PATH",
    "READ",
    "SCOPES",
    "SCOPE_KEY",
    "SESSION_COOKIE",
    "STATE_KEY",
    "STATIC_KEY_ID",
    "SUBMIT",
    "ApiKeyMiddleware",
    "AuthError",
    "AuthSettings",
    "IssuedKey",
    "KeyNotFound",
    "KeyRecord",
    "KeyStore",
    "KeyStoreError",
    "KeyVerifier",
    "RedactKeys",
    "Sessions",
    "kept_secret",
    "key_lookup",
    "key_of",
    "keys_file_path",
    "open_key_store",
    "parse_scopes",
    "redact",
    "safe_next",
    "same_origin",
    "session_secret",
    "sorted_scopes",
    "without_session_cookie",
]
