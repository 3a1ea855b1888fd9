"""The errors of a guarded fetch: refused before connecting, or unreachable after trying.

Each carries a stable `code` so that callers (the job API, webhooks, model downloads) can turn it
into their own answer without parsing messages.
"""

from __future__ import annotations

from comfyfleet.errors import ComfyfleetError


class NetGuardError(ComfyfleetError):
    """A URL that the guard would not fetch, or could not."""

    code = "url_error"


class UrlRefused(NetGuardError):
    """Refused before any connection: a scheme, a malformed URL, or an address the policy forbids.

    `address` and `address_class` are set when an address was the reason (e.g. "127.0.0.1",
    "loopback").
    """

    code = "url_refused"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        address: str | None = None,
        address_class: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.address = address
        self.address_class = address_class


class UrlUnreachable(NetGuardError):
    """The host did not resolve, refused the connection, timed out, or broke off."""

    code = "url_unreachable"


class TooManyRedirects(UrlUnreachable):
    """The redirect chain is longer than the limit."""

    code = "too_many_redirects"
