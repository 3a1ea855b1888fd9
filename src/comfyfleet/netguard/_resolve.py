"""Resolving a host once and checking every address it gives before any connection is made.

The addresses returned here are the only ones the guarded client connects to: checking a name and
then letting the HTTP library resolve it again would leave room for DNS rebinding (a first answer
that is public, a second that is 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import ip_address
from typing import Any

from comfyfleet.netguard._classify import IPAddress
from comfyfleet.netguard._errors import UrlUnreachable
from comfyfleet.netguard._policy import NetPolicy

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`(host, port) -> addresses`: the seam that tests use to map names to local servers."""
BlockingResolver = Callable[[str, int], Sequence[str]]
"""The same for code on worker threads (the model downloader's connections)."""


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host`, in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return _unique(infos)


def system_resolve_blocking(host: str, port: int) -> list[str]:
    """:func:`system_resolve`, blocking."""
    return _unique(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def _unique(infos: Sequence[tuple[Any, ...]]) -> list[str]:
    found: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


def ip_literal(host: str) -> IPAddress | None:
    """`host` as an address when it is written as one (brackets allowed), else None."""
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None


async def checked_addresses(
    host: str, port: int, policy: NetPolicy, resolve: Resolver = system_resolve
) -> list[IPAddress]:
    """Every address of `host`, each one allowed by `policy`.

    One forbidden address refuses the whole host (:class:`UrlRefused`): a name that points both
    outside and inside is not one to trust with either. A name that does not resolve is
    :class:`UrlUnreachable`.
    """
    literal = ip_literal(host)
    if literal is not None:
        policy.check(host, literal)
        return [literal]
    try:
        names = await resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise _unresolved(host, exc) from exc
    return _checked(host, names, policy)


def checked_addresses_blocking(
    host: str, port: int, policy: NetPolicy, resolve: BlockingResolver = system_resolve_blocking
) -> list[IPAddress]:
    """:func:`checked_addresses`, blocking (for worker threads)."""
    literal = ip_literal(host)
    if literal is not None:
        policy.check(host, literal)
        return [literal]
    try:
        names = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise _unresolved(host, exc) from exc
    return _checked(host, names, policy)


def _unresolved(host: str, exc: BaseException) -> UrlUnreachable:
    return UrlUnreachable(f"cannot resolve host {host}: {exc}", hint="check the URL's host name")


def _checked(host: str, names: Sequence[str], policy: NetPolicy) -> list[IPAddress]:
    if not names:
        raise UrlUnreachable(f"host {host} has no address", hint="check the URL's host name")
    addresses = [ip_address(name) for name in names]
    for address in addresses:
        policy.check(host, address)
    return addresses
