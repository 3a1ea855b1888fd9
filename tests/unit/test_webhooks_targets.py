"""Which webhook options a job may carry, and which addresses the default guard lets us call."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from comfyfleet.webhooks import (
    DEFAULT_EVENTS,
    PrivateAddressGuard,
    WebhookConfigError,
    WebhookTarget,
    WebhookTargetRefused,
    is_public,
    parse_webhook,
)


def parse(value: Any) -> WebhookTarget:
    return parse_webhook(value, default_events=DEFAULT_EVENTS)


def test_events_default_to_how_the_job_ended_and_accept_short_names() -> None:
    target = parse({"url": "https://example.com/hook"})
    assert target.events == frozenset(DEFAULT_EVENTS)
    assert target.wants("job.failed") and not target.wants("job.progress")
    short = parse({"url": "https://example.com/hook", "events": ["progress", "job.succeeded"]})
    assert short.events == {"job.progress", "job.succeeded"}
    everything = parse({"url": "http://example.com:8080/h?x=1", "events": ["*"]})
    assert everything.wants("job.executing") and everything.url.endswith("?x=1")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://example.com", "must be an object"),
        ({"url": 5}, "must be a string"),
        ({"url": "example.com/hook"}, "absolute http or https"),
        ({"url": "file:///etc/passwd"}, "absolute http or https"),
        ({"url": "https://user:pw@example.com/"}, "user name or password"),
        ({"url": "https://example.com:99999/"}, "malformed"),
        ({"url": "https://example.com", "events": []}, "non-empty list"),
        ({"url": "https://example.com", "events": "job.failed"}, "non-empty list"),
        ({"url": "https://example.com", "events": [" "]}, "empty"),
        ({"url": "https://example.com", "secret": "x"}, "unknown fields: secret"),
        ({"url": "https://example.com/" + "a" * 3000}, "longer than"),
    ],
)
def test_unusable_webhook_options_say_what_is_wrong(value: Any, message: str) -> None:
    with pytest.raises(WebhookConfigError, match=message):
        parse(value)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_public_means_reachable_on_the_internet(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_the_guard_refuses_private_targets_unless_allowed() -> None:
    strict, lenient = PrivateAddressGuard(), PrivateAddressGuard(allow_private=True)

    async def scenario() -> None:
        for url in ("http://127.0.0.1:8188/x", "http://[::1]/", "http://169.254.169.254/latest"):
            with pytest.raises(WebhookTargetRefused, match="not a public address"):
                await strict.check(url)
            await lenient.check(url)
        with pytest.raises(WebhookTargetRefused, match="not a public address"):
            await strict.check("http://localhost:9/")  # a name is judged by what it resolves to
        await strict.check("https://8.8.8.8/hook")
        with pytest.raises(WebhookTargetRefused, match="http or https"):
            await lenient.check("gopher://example.com/")

    asyncio.run(scenario())
