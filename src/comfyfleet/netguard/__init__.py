"""The SSRF guard: fetch URLs given by clients without reaching inside the deployment.

Used by the job API's media inputs and by webhook deliveries; the model downloader holds the
model URLs in job graphs to the same policy over its own connections. `NetPolicy`
says which non-public addresses are allowed (none by default); `GuardedClient` resolves once,
checks every address, connects to the checked IP only, and checks every redirect hop.
"""

from __future__ import annotations

from comfyfleet.netguard._classify import AddressClass, IPAddress, address_class, describe
from comfyfleet.netguard._client import GuardedClient, GuardedResponse, parse_url, short_url
from comfyfleet.netguard._errors import NetGuardError, TooManyRedirects, UrlRefused, UrlUnreachable
from comfyfleet.netguard._policy import NetPolicy, parse_networks
from comfyfleet.netguard._resolve import (
    BlockingResolver,
    Resolver,
    checked_addresses,
    checked_addresses_blocking,
    system_resolve,
    system_resolve_blocking,
)

__all__ = [
    "AddressClass",
    "BlockingResolver",
    "GuardedClient",
    "GuardedResponse",
    "IPAddress",
    "NetGuardError",
    "NetPolicy",
    "Resolver",
    "TooManyRedirects",
    "UrlRefused",
    "UrlUnreachable",
    "address_class",
    "checked_addresses",
    "checked_addresses_blocking",
    "describe",
    "parse_networks",
    "parse_url",
    "short_url",
    "system_resolve",
    "system_resolve_blocking",
]
