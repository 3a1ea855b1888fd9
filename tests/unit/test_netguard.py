"""The SSRF guard's decisions: address classes, the policy, URL and scheme checks, resolution."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address as _ip

import pytest

from comfyfleet.errors import ConfigError
from comfyfleet.netguard import (
    AddressClass,
    GuardedClient,
    NetPolicy,
    UrlRefused,
    UrlUnreachable,
    address_class,
    checked_addresses,
    describe,
    parse_url,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


LOOPBACK, PRIVATE, LINK = AddressClass.LOOPBACK, AddressClass.PRIVATE, AddressClass.LINK_LOCAL

ADDRESSES: list[tuple[str, AddressClass | None]] = [
    # IPv4
    ("127.0.0.1", LOOPBACK),
    ("127.255.255.254", LOOPBACK),
    ("10.0.0.1", PRIVATE),
    ("172.16.0.1", PRIVATE),
    ("172.31.255.255", PRIVATE),
    ("192.168.1.1", PRIVATE),
    ("169.254.169.254", LINK),
    ("169.254.0.1", LINK),
    ("100.64.0.1", AddressClass.SHARED),
    ("100.127.255.254", AddressClass.SHARED),
    ("224.0.0.1", AddressClass.MULTICAST),
    ("239.255.255.250", AddressClass.MULTICAST),
    ("0.0.0.0", AddressClass.UNSPECIFIED),
    ("0.1.2.3", AddressClass.UNSPECIFIED),
    ("240.0.0.1", AddressClass.RESERVED),
    ("255.255.255.255", AddressClass.RESERVED),
    ("192.0.2.10", AddressClass.RESERVED),  # documentation
    ("198.18.0.1", AddressClass.RESERVED),  # benchmarking
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("172.32.0.1", None),  # just outside 172.16/12
    ("100.128.0.1", None),  # just outside 100.64/10
    # IPv6
    ("::1", LOOPBACK),
    ("::", AddressClass.UNSPECIFIED),
    ("fc00::1", PRIVATE),
    ("fd12:3456::1", PRIVATE),
    ("fd00:ec2::254", PRIVATE),  # the AWS IPv6 metadata address
    ("fec0::1", PRIVATE),  # deprecated site-local
    ("fe80::1", LINK),
    ("febf::1", LINK),
    ("ff02::1", AddressClass.MULTICAST),
    ("2001:db8::1", AddressClass.RESERVED),  # documentation
    ("2606:4700:4700::1111", None),
    ("2a00:1450:4001::200e", None),
    # IPv6 forms that carry IPv4
    ("::ffff:127.0.0.1", LOOPBACK),
    ("::ffff:7f00:1", LOOPBACK),
    ("::ffff:10.1.2.3", PRIVATE),
    ("::ffff:169.254.169.254", LINK),
    ("::ffff:100.64.0.1", AddressClass.SHARED),
    ("::ffff:8.8.8.8", None),
    ("::127.0.0.1", LOOPBACK),  # IPv4-compatible (deprecated)
    ("::8.8.8.8", AddressClass.RESERVED),
    ("64:ff9b::a00:1", PRIVATE),  # NAT64 of 10.0.0.1
    ("64:ff9b::7f00:1", LOOPBACK),
    ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
    ("64:ff9b:1::1", PRIVATE),  # local-use NAT64
    ("2002:7f00:1::", LOOPBACK),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", LINK),  # 6to4 of 169.254.169.254
]


@pytest.mark.parametrize(("address", "expected"), ADDRESSES)
def test_address_classes(address: str, expected: AddressClass | None) -> None:
    assert address_class(address) == expected


def test_descriptions_name_the_address_and_its_class() -> None:
    assert describe("127.0.0.1") == "127.0.0.1 is a loopback address"
    assert describe("10.0.0.1") == "10.0.0.1 is a private address"
    assert describe("0.0.0.0") == "0.0.0.0 is an unspecified address"
    assert describe("169.254.169.254") == (
        "169.254.169.254 is a link-local address, the cloud metadata service"
    )
    mapped = describe("::ffff:127.0.0.1")
    assert mapped is not None
    assert "loopback" in mapped and "IPv4-mapped 127.0.0.1" in mapped
    assert describe("8.8.8.8") is None


def test_default_policy_refuses_every_non_public_address() -> None:
    policy = NetPolicy()
    for address, expected in ADDRESSES:
        if expected is None:
            policy.check(address, _ip(address))
        else:
            with pytest.raises(UrlRefused) as caught:
                policy.check(address, _ip(address))
            assert caught.value.address_class == str(expected)
            assert caught.value.code == "url_refused"


def test_refusal_of_a_name_says_what_it_resolved_to() -> None:
    with pytest.raises(UrlRefused) as caught:
        NetPolicy().check("localhost", _ip("127.0.0.1"))
    assert caught.value.message == "127.0.0.1 is a loopback address (localhost resolves to it)"


def test_allow_private_allows_everything() -> None:
    policy = NetPolicy.build(allow_private=True)
    for address, _ in ADDRESSES:
        policy.check("h", _ip(address))


def test_allowed_networks_open_exactly_those_networks() -> None:
    policy = NetPolicy.build(networks=["10.20.0.0/16", "127.0.0.1", "fd00::/8"])
    policy.check("h", _ip("10.20.3.4"))
    policy.check("h", _ip("127.0.0.1"))
    policy.check("h", _ip("::ffff:127.0.0.1"))  # the mapped form of an allowed address
    policy.check("h", _ip("fd00::5"))
    for refused in ("10.21.0.1", "127.0.0.2", "169.254.169.254", "::1"):
        with pytest.raises(UrlRefused):
            policy.check("h", _ip(refused))


def test_allowed_hosts_match_names_and_suffixes() -> None:
    policy = NetPolicy.build(hosts=["media.internal", ".corp.example", "*.lab"])
    for host in ("media.internal", "MEDIA.internal.", "a.corp.example", "x.y.lab"):
        policy.check(host, _ip("10.0.0.5"))
    for host in ("other.internal", "corp.example", "evilcorp.example", "media.internal.evil"):
        with pytest.raises(UrlRefused):
            policy.check(host, _ip("10.0.0.5"))


def test_a_bad_cidr_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not-a-network"):
        NetPolicy.build(networks=["not-a-network"])


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "gopher://example.com:70/_x",
        "dict://example.com:11211/stat",
        "s3://bucket/key",
        "javascript:alert(1)",
        "example.com/a.png",
    ],
)
def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    with pytest.raises(UrlRefused, match="not fetched"):
        parse_url(url)


def test_a_url_without_a_host_is_refused() -> None:
    with pytest.raises(UrlRefused):
        parse_url("http:///path")


class FakeDns:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return self.answers[host]


async def test_names_are_resolved_once_and_every_address_checked() -> None:
    dns = FakeDns({"public.test": ["8.8.8.8"], "split.test": ["8.8.8.8", "10.0.0.1"]})
    assert [str(a) for a in await checked_addresses("public.test", 80, NetPolicy(), dns)] == [
        "8.8.8.8"
    ]
    with pytest.raises(UrlRefused, match=r"10\.0\.0\.1 is a private address \(split\.test"):
        await checked_addresses("split.test", 80, NetPolicy(), dns)
    assert dns.asked == ["public.test", "split.test"]


async def test_ip_literals_are_not_resolved() -> None:
    dns = FakeDns({})
    with pytest.raises(UrlRefused, match="loopback"):
        await checked_addresses("[::1]", 80, NetPolicy(), dns)
    assert dns.asked == []


async def test_an_unknown_host_is_unreachable() -> None:
    with pytest.raises(UrlUnreachable, match=r"cannot resolve host nowhere\.test"):
        await checked_addresses("nowhere.test", 80, NetPolicy(), FakeDns({}))


async def test_the_client_refuses_before_resolving_or_connecting() -> None:
    dns = FakeDns({"inside.test": ["192.168.0.10"]})
    client = GuardedClient(resolve=dns)
    for url in ("http://127.0.0.1:9/x", "http://[::ffff:169.254.169.254]/", "http://inside.test/"):
        with pytest.raises(UrlRefused):
            async with client.stream("GET", url):
                pass
    with pytest.raises(UrlRefused, match="ftp:// URLs are not fetched"):
        async with client.stream("GET", "ftp://example.com/"):
            pass
