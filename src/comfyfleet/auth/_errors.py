"""The errors of API key handling, all :class:`~comfyfleet.errors.ComfyfleetError`."""

from __future__ import annotations

from comfyfleet.errors import ComfyfleetError


class AuthError(ComfyfleetError):
    """An API key operation was asked with a bad value (a name, an expiry)."""


class KeyStoreError(AuthError):
    """The key file cannot be read, parsed or written."""


class KeyNotFound(AuthError):
    """No key with that id is in the key file."""
