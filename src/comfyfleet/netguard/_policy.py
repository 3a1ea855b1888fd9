"""What a deployment allows its fetches to reach beyond the public internet.

By default nothing but global addresses. An operator whose media live on the private network opens
exactly that: `allowed_networks` (CIDRs such as "10.20.0.0/16") or `allowed_hosts` (names such as
"media.internal", or ".internal" for every name under it). `allow_private` turns the address check
off entirely (development setups); schemes and redirects are still checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_network

from comfyfleet.errors import ConfigError
from comfyfleet.netguard._classify import IPAddress, address_class, describe
from comfyfleet.netguard._errors import UrlRefused

IPNetwork = IPv4Network | IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses) as networks; a bad one is a :class:`ConfigError`."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"allowed network {value!r} is not a CIDR or an IP address",
                hint="write it like 10.0.0.0/8, 192.168.1.20 or fd00::/8",
            ) from exc
    return tuple(networks)


@dataclass(frozen=True)
class NetPolicy:
    """Which non-public addresses a guarded fetch may reach (none by default)."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        allow_private: bool = False,
        networks: Iterable[str] = (),
        hosts: Iterable[str] = (),
    ) -> NetPolicy:
        """A policy from settings strings; raises :class:`ConfigError` on a bad CIDR."""
        names = tuple(h.strip().lower().rstrip(".") for h in hosts if h.strip())
        return cls(allow_private, parse_networks(networks), names)

    def host_allowed(self, host: str) -> bool:
        """Whether `host` (a name as written in the URL) is allowlisted, whatever it resolves to."""
        name = host.lower().rstrip(".")
        for entry in self.allowed_hosts:
            suffix = entry.removeprefix("*")
            if name == entry or (suffix.startswith(".") and name.endswith(suffix)):
                return True
        return False

    def address_allowed(self, address: IPAddress) -> bool:
        if self.allow_private or address_class(address) is None:
            return True
        candidates: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            ip in network
            for ip in candidates
            for network in self.allowed_networks
            if ip.version == network.version
        )

    def check(self, host: str, address: IPAddress) -> None:
        """Raise :class:`UrlRefused` unless `address`, which `host` resolved to, may be reached."""
        if self.address_allowed(address) or self.host_allowed(host):
            return
        reason = describe(address) or f"{address} is not allowed"
        label = address_class(address)
        if host.strip("[]") != str(address):
            reason += f" ({host} resolves to it)"
        raise UrlRefused(
            reason,
            hint="only public addresses are fetched; an operator can allow this one in the "
            "allowed_networks or allowed_hosts setting",
            address=str(address),
            address_class=None if label is None else str(label),
        )
