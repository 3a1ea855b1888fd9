"""Object keys: the one check that keeps every backend inside its folder, bucket or prefix.

Keys come from ComfyUI output names and from users, so they are checked once here, before any
backend turns them into a path or an object name.
"""

from __future__ import annotations

from urllib.parse import quote

from comfyfleet.storage._errors import InvalidKey

MAX_KEY_BYTES = 1024
"""S3's and Azure's limit on a whole object name (prefix included)."""


def check_key(key: str) -> str:
    """Return `key` unchanged when it is a safe relative POSIX path; raise `InvalidKey` if not."""
    if not key:
        raise InvalidKey(key, "it is empty")
    if "\x00" in key:
        raise InvalidKey(key, "it contains a NUL character")
    if "\\" in key:
        raise InvalidKey(key, "it contains a backslash (use '/' between folders)")
    if key.startswith("/"):
        raise InvalidKey(key, "it starts with '/' (keys are relative)")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise InvalidKey(key, "it contains a control character")
    for part in key.split("/"):
        if part == "..":
            raise InvalidKey(key, "it contains '..'")
        if part in ("", "."):
            raise InvalidKey(key, "it has an empty or '.' path segment")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(key, f"it is longer than {MAX_KEY_BYTES} bytes")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix normalised to '' or 'a/b/' (it is checked like a key)."""
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    return check_key(prefix) + "/"


def quote_key(key: str) -> str:
    """The key as it goes into a URL path: each segment escaped, the slashes kept."""
    return quote(key, safe="/")
