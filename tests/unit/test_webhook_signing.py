"""Webhook signatures: the sender's ``sign`` and the receiver's ``verify_signature``."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

import pytest

from meterline.live.webhook_service import RetryPolicy, sign
from meterline.sdk.webhook_signatures import WebhookSignatureError, verify_signature

SECRET = "whsec_test-secret"
NOW_S = 1_795_435_200
BODY = (
    b'{"created":"2026-11-23T12:00:00Z","data":{"amount":12.50,"customer":"acme"},'
    b'"id":"evt-1","kind":"balance.low"}'
)


def reference_signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """HMAC-SHA256 of "<t>." + body, computed here with nothing but hmac."""
    message = str(timestamp_s).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_sign_matches_an_independent_hmac() -> None:
    """``sign`` is t=<seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>."""
    expected = reference_signature(SECRET, NOW_S, BODY)
    assert sign(SECRET, NOW_S, BODY) == f"t={NOW_S},v1={expected}"


def test_known_vector() -> None:
    """A fixed vector, so a change of scheme cannot pass unnoticed."""
    assert sign("whsec_abc", 1700000000, b"{}") == (
        "t=1700000000,v1=" + reference_signature("whsec_abc", 1700000000, b"{}")
    )
    assert reference_signature("whsec_abc", 1700000000, b"{}") == (
        hmac.new(b"whsec_abc", b"1700000000.{}", hashlib.sha256).hexdigest()
    )


def test_verify_returns_the_envelope_with_exact_decimals() -> None:
    """A genuine request verifies and decodes with non-integers as Decimal."""
    envelope = verify_signature(SECRET, sign(SECRET, NOW_S, BODY), BODY, now_s=NOW_S)
    assert envelope["id"] == "evt-1"
    assert envelope["data"]["amount"] == Decimal("12.50")
    assert isinstance(envelope["data"]["amount"], Decimal)


@pytest.mark.parametrize(
    "tampered",
    [
        BODY.replace(b"12.50", b"12.51"),
        BODY + b" ",
        BODY.replace(b"acme", b"acmf"),
    ],
)
def test_a_changed_body_is_refused(tampered: bytes) -> None:
    """Any change to the body breaks the signature."""
    header = sign(SECRET, NOW_S, BODY)
    with pytest.raises(WebhookSignatureError, match="signature mismatch"):
        verify_signature(SECRET, header, tampered, now_s=NOW_S)


def test_a_changed_timestamp_or_another_secret_is_refused() -> None:
    """The timestamp is signed too, and only the endpoint's secret verifies."""
    signature = reference_signature(SECRET, NOW_S, BODY)
    with pytest.raises(WebhookSignatureError, match="signature mismatch"):
        verify_signature(SECRET, f"t={NOW_S + 1},v1={signature}", BODY, now_s=NOW_S)
    with pytest.raises(WebhookSignatureError, match="signature mismatch"):
        verify_signature("whsec_other", sign(SECRET, NOW_S, BODY), BODY, now_s=NOW_S)


def test_tolerance() -> None:
    """Timestamps within the tolerance pass either side of now; beyond it, refused."""
    header = sign(SECRET, NOW_S, BODY)
    verify_signature(SECRET, header, BODY, now_s=NOW_S + 300)
    verify_signature(SECRET, header, BODY, now_s=NOW_S - 300)
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_signature(SECRET, header, BODY, now_s=NOW_S + 301)
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_signature(SECRET, header, BODY, now_s=NOW_S - 301)
    verify_signature(SECRET, header, BODY, tolerance_s=3600, now_s=NOW_S + 3000)


def test_several_signatures_for_secret_rotation() -> None:
    """Any one of several v1 entries matching is enough; unknown schemes are ignored."""
    old = reference_signature("whsec_old", NOW_S, BODY)
    new = reference_signature("whsec_new", NOW_S, BODY)
    header = f"t={NOW_S},v1={old},v1={new},v0=ignored"
    assert verify_signature("whsec_old", header, BODY, now_s=NOW_S)["id"] == "evt-1"
    assert verify_signature("whsec_new", header, BODY, now_s=NOW_S)["id"] == "evt-1"
    with pytest.raises(WebhookSignatureError, match="signature mismatch"):
        verify_signature("whsec_third", header, BODY, now_s=NOW_S)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "missing"),
        ("   ", "missing"),
        ("garbage", "not name=value"),
        (f"t={NOW_S}", "no v1"),
        ("v1=abc", "exactly one t="),
        (f"t={NOW_S},t={NOW_S},v1=abc", "exactly one t="),
        ("t=soon,v1=abc", "not unix seconds"),
        ("t=-5,v1=abc", "not unix seconds"),
        (f"t={NOW_S},,v1=abc", "not name=value"),
        ("t=" + "1" * 5000, "longer than"),
    ],
)
def test_garbled_headers_say_why(header: str, reason: str) -> None:
    """A missing or garbled header is refused with a reason, before any HMAC."""
    with pytest.raises(WebhookSignatureError, match=reason):
        verify_signature(SECRET, header, BODY, now_s=NOW_S)


def test_a_signed_body_that_is_not_an_envelope_is_refused() -> None:
    """A correctly signed body must still be a webhook envelope."""
    body = b"[1, 2]"
    with pytest.raises(WebhookSignatureError, match="envelope"):
        verify_signature(SECRET, sign(SECRET, NOW_S, body), body, now_s=NOW_S)


def test_the_default_retry_schedule() -> None:
    """Delays double from 500 ms and are capped at 60 s; attempt numbers start at 1."""
    policy = RetryPolicy()
    delays_ms = [policy.delay_after(number) // 1000 for number in range(1, 10)]
    assert delays_ms == [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
    assert RetryPolicy(first_delay_ms=100, factor=3, max_delay_ms=1000).delay_after(4) == (
        1_000_000
    )
    assert RetryPolicy().delay_after(10_000) == 60_000_000
    with pytest.raises(ValueError, match="attempt_number"):
        policy.delay_after(0)
    with pytest.raises(ValueError, match="attempts_max"):
        RetryPolicy(attempts_max=0)
