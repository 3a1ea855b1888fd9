"""Which addresses a fetch made on a client's behalf must not reach, and why.

A URL that a client hands the gateway is fetched from inside the deployment, where it reaches what
the client cannot: the loopback services (ComfyUI itself listens on 127.0.0.1), the private
network, and the cloud metadata service at 169.254.169.254 that hands out credentials. Every
address is therefore classified before a connection is made. IPv6 forms that carry an IPv4 address
(IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`,
Teredo) are judged by the IPv4 address inside them, since that is where the packets can end up.
Anything else that is not globally routable is "reserved".
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address


class AddressClass(StrEnum):
    UNSPECIFIED = "unspecified"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    SHARED = "carrier-grade NAT"
    MULTICAST = "multicast"
    RESERVED = "reserved"


_V4 = tuple(
    (IPv4Network(network), label)
    for network, label in (
        ("0.0.0.0/8", AddressClass.UNSPECIFIED),
        ("127.0.0.0/8", AddressClass.LOOPBACK),
        ("10.0.0.0/8", AddressClass.PRIVATE),
        ("172.16.0.0/12", AddressClass.PRIVATE),
        ("192.168.0.0/16", AddressClass.PRIVATE),
        ("169.254.0.0/16", AddressClass.LINK_LOCAL),
        ("100.64.0.0/10", AddressClass.SHARED),
        ("224.0.0.0/4", AddressClass.MULTICAST),
        ("240.0.0.0/4", AddressClass.RESERVED),
    )
)
_V6 = tuple(
    (IPv6Network(network), label)
    for network, label in (
        ("::/128", AddressClass.UNSPECIFIED),
        ("::1/128", AddressClass.LOOPBACK),
        ("fc00::/7", AddressClass.PRIVATE),
        ("fec0::/10", AddressClass.PRIVATE),
        ("64:ff9b:1::/48", AddressClass.PRIVATE),
        ("fe80::/10", AddressClass.LINK_LOCAL),
        ("ff00::/8", AddressClass.MULTICAST),
    )
)
_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_METADATA = IPv4Address("169.254.169.254")


def _v4_class(address: IPv4Address) -> AddressClass | None:
    for network, label in _V4:
        if address in network:
            return label
    return None if address.is_global else AddressClass.RESERVED


def _embedded_v4(address: IPv6Address) -> tuple[IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries, and the name of the form that carries it."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _COMPATIBLE:
        return IPv4Address(int(address) & 0xFFFFFFFF), "IPv4-compatible"
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    if address.teredo is not None:
        return address.teredo[1], "Teredo"
    return None


def address_class(address: IPAddress | str) -> AddressClass | None:
    """The class that makes `address` off-limits, or None for a public (global) address."""
    ip = ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, IPv4Address):
        return _v4_class(ip)
    for network, label in _V6:
        if ip in network:
            return label
    embedded = _embedded_v4(ip)
    if embedded is not None:
        inner = _v4_class(embedded[0])
        if inner is not None:
            return inner
        return None if embedded[1] != "IPv4-compatible" else AddressClass.RESERVED
    return None if ip.is_global else AddressClass.RESERVED


def describe(address: IPAddress | str) -> str | None:
    """Why `address` is off-limits, in words ("127.0.0.1 is a loopback address"), or None."""
    ip = ip_address(address) if isinstance(address, str) else address
    label = address_class(ip)
    if label is None:
        return None
    article = "an" if str(label)[0] in "aeiou" else "a"
    text = f"{ip} is {article} {label} address"
    if isinstance(ip, IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            text += f" ({embedded[1]} {embedded[0]})"
    if ip == _METADATA or (isinstance(ip, IPv6Address) and ip.ipv4_mapped == _METADATA):
        text += ", the cloud metadata service"
    return text
