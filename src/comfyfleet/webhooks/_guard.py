"""Which addresses webhooks may be sent to.

A webhook URL comes from whoever submits a job, so without a check any client could make this
service send requests into its own network (metadata endpoints, admin panels on localhost): a
server-side request forgery. The default guard resolves the host and refuses loopback, private,
link-local, multicast and other non-public addresses unless `allow_private_targets` is set. What
counts as public is `comfyfleet.netguard`'s judgement, the same as for media inputs (IPv6 forms
that carry an IPv4 address are judged by that address).

It runs before every attempt, since DNS answers change. A host name that resolves to a public
address at check time and a private one a moment later (DNS rebinding) still slips through; a
guard that pins the checked address into the connection can replace this one (the sender takes
any :class:`TargetGuard`).
"""

from __future__ import annotations

import ipaddress
from typing import Protocol
from urllib.parse import urlsplit

from comfyfleet.netguard import IPAddress, address_class, system_resolve
from comfyfleet.webhooks._errors import WebhookConfigError, WebhookTargetRefused
from comfyfleet.webhooks._model import check_url_shape


class TargetGuard(Protocol):
    async def check(self, url: str) -> None:
        """Return when `url` may be called. Raise WebhookTargetRefused when it may never be (the
        delivery fails at once), or OSError when it cannot be told now (the attempt is retried)."""
        ...


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (one that carries an IPv4 address, such as
    IPv4-mapped `::ffff:a.b.c.d`, judged by that)."""
    return address_class(address) is None


class PrivateAddressGuard:
    """Refuses URLs whose host is or resolves to a non-public address, unless `allow_private`."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    async def check(self, url: str) -> None:
        try:
            check_url_shape(url)
        except WebhookConfigError as exc:
            raise WebhookTargetRefused(exc.message, hint=exc.hint) from exc
        if self.allow_private:
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        for address in await _addresses(host, port):
            if not is_public(address):
                raise WebhookTargetRefused(
                    f"the webhook URL host '{host}' resolves to {address}, which is not a "
                    "public address",
                    hint="use a public URL, or set webhooks.allow_private_targets if this "
                    "service should call its own network",
                )


async def _addresses(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    # Strip an IPv6 zone ("fe80::1%eth0") before parsing; the address still counts.
    found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await system_resolve(host, port)]
    if not found:
        raise OSError(f"'{host}' resolves to no address")
    return found
