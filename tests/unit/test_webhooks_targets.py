"""Which webhook options a job may carry (where a URL may point is the sender's check, tested
with the sender)."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfleet.webhooks import (
    DEFAULT_EVENTS,
    WebhookConfigError,
    WebhookTarget,
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
