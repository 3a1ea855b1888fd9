"""Webhook signatures: what we send is what a Standard Webhooks receiver computes, and `verify`
accepts exactly the genuine, fresh requests."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from pydantic import SecretStr, ValidationError

from comfyfleet.webhooks import (
    WebhookConfigError,
    WebhookSettings,
    WebhookVerificationError,
    generate_secret,
    sign,
    signed_headers,
    verify,
)

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
MSG_ID = "msg_2f1c"
STAMP = 1_700_000_000
BODY = b'{"type":"job.succeeded","timestamp":"2023-11-14T22:13:20+00:00","data":{"id":"a"}}'


def by_hand(key: bytes, msg_id: str, stamp: int, body: bytes) -> str:
    mac = hmac.new(key, msg_id.encode() + b"." + str(stamp).encode() + b"." + body, "sha256")
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_signature_matches_hmac_sha256_of_id_timestamp_body() -> None:
    assert sign(SECRET, MSG_ID, STAMP, BODY) == by_hand(KEY, MSG_ID, STAMP, BODY)
    assert sign(SECRET, MSG_ID, STAMP, BODY.decode()) == by_hand(KEY, MSG_ID, STAMP, BODY)


def test_a_fixed_vector_stays_fixed() -> None:
    digest = hmac.new(b"\x00" * 24, b"msg_1.1614265330.{}", hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    assert sign("whsec_" + base64.b64encode(b"\x00" * 24).decode(), "msg_1", 1614265330, "{}") == (
        expected
    )


def test_a_secret_without_the_prefix_is_its_utf8_bytes() -> None:
    assert sign("pässword", MSG_ID, STAMP, BODY) == by_hand(
        "pässword".encode(), MSG_ID, STAMP, BODY
    )


def test_a_malformed_whsec_secret_is_a_config_error() -> None:
    with pytest.raises(WebhookConfigError, match="not base64"):
        sign("whsec_!!not-base64!!", MSG_ID, STAMP, BODY)


def test_generated_secrets_are_random_32_byte_keys() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_signed_headers_carry_id_timestamp_and_signature() -> None:
    headers = signed_headers(SECRET, MSG_ID, BODY, timestamp=STAMP)
    assert headers == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(STAMP),
        "webhook-signature": by_hand(KEY, MSG_ID, STAMP, BODY),
    }


# --- verify -------------------------------------------------------------------------------------


def headers(signature: str | None = None, stamp: int = STAMP) -> dict[str, str]:
    return {
        "Webhook-Id": MSG_ID,
        "Webhook-Timestamp": str(stamp),
        "Webhook-Signature": signature or by_hand(KEY, MSG_ID, stamp, BODY),
    }


def test_verify_accepts_a_genuine_request_in_any_header_case() -> None:
    verify(SECRET, headers(), BODY, now=STAMP + 10)
    verify(SECRET, {k.lower(): v for k, v in headers().items()}, BODY.decode(), now=STAMP)


def test_verify_refuses_a_tampered_body() -> None:
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify(SECRET, headers(), BODY.replace(b'"a"', b'"b"'), now=STAMP)


def test_verify_refuses_another_secret() -> None:
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify(generate_secret(), headers(), BODY, now=STAMP)


def test_verify_refuses_a_changed_id_or_timestamp() -> None:
    moved = headers() | {"Webhook-Timestamp": str(STAMP + 1)}
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, moved, BODY, now=STAMP)
    renamed = headers() | {"Webhook-Id": "msg_other"}
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, renamed, BODY, now=STAMP)


def test_verify_refuses_old_and_future_timestamps() -> None:
    with pytest.raises(WebhookVerificationError, match="old"):
        verify(SECRET, headers(), BODY, now=STAMP + 301)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify(SECRET, headers(), BODY, now=STAMP - 301)
    verify(SECRET, headers(), BODY, now=STAMP + 3000, tolerance_s=3600)


def test_verify_accepts_one_valid_signature_among_several() -> None:
    good = by_hand(KEY, MSG_ID, STAMP, BODY)
    wrong = by_hand(b"old key", MSG_ID, STAMP, BODY)
    verify(SECRET, headers(f"{wrong} v2,whatever {good}"), BODY, now=STAMP)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers(f"{wrong} v2,{good.removeprefix('v1,')}"), BODY, now=STAMP)


def test_verify_says_which_headers_are_missing() -> None:
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify(SECRET, {"webhook-id": MSG_ID, "webhook-timestamp": str(STAMP)}, BODY, now=STAMP)
    with pytest.raises(WebhookVerificationError, match="unix seconds"):
        verify(SECRET, headers() | {"Webhook-Timestamp": "yesterday"}, BODY, now=STAMP)


def test_settings_refuse_to_run_without_a_secret() -> None:
    with pytest.raises(WebhookConfigError, match="signing secret"):
        WebhookSettings().signing_secret()
    secret = generate_secret()
    settings = WebhookSettings(secret=SecretStr(secret))
    assert settings.signing_secret() == secret
    assert secret not in repr(settings)
    assert WebhookSettings.model_validate({"secret": secret}).signing_secret() == secret


def test_a_malformed_secret_fails_at_load_without_showing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookSettings.model_validate({"secret": "whsec_!!sekrit!!"})
    assert "not base64" in str(caught.value)
    assert "sekrit" not in str(caught.value)
