"""Signature verification over the raw body (pure functions; the clock is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integration_core.webhooks.events import PayloadError, describe
from integration_core.webhooks.signing import SignatureError, SigningConfig, sign, verify

SECRET = "0123456789abcdef0123456789abcdef"
BODY = b'{"eventId":"e1","eventType":"Job.Completed","data":{"id":1}}'
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _reason(config: SigningConfig, body: bytes, signature: str | None, timestamp: str | None = None) -> str | None:
    try:
        verify(config, body, signature, timestamp, now=NOW)
    except SignatureError as exc:
        return exc.reason
    return None


def test_hex_and_base64_over_the_raw_bytes() -> None:
    hexed = SigningConfig(SECRET, "X-Sig", "hex")
    b64 = SigningConfig(SECRET, "X-Sig", "base64")
    assert _reason(hexed, BODY, sign(SECRET, BODY, encoding="hex")) is None
    assert _reason(b64, BODY, sign(SECRET, BODY, encoding="base64")) is None
    assert _reason(hexed, BODY, "sha256=" + sign(SECRET, BODY)) is None  # GitHub-style prefix
    # the same JSON with other whitespace is another body: the signature is over the bytes received
    assert _reason(hexed, BODY.replace(b":", b": "), sign(SECRET, BODY)) == "bad_signature"
    assert _reason(hexed, BODY, sign(SECRET, BODY, encoding="base64")) == "bad_signature"
    assert _reason(hexed, BODY, sign("another-secret-0123456789", BODY)) == "bad_signature"
    assert _reason(hexed, BODY, "zz-not-hex") == "bad_signature"
    assert _reason(hexed, BODY, None) == "missing_signature"
    assert _reason(hexed, BODY, "  ") == "missing_signature"


def test_any_one_of_several_candidates_is_enough() -> None:
    config = SigningConfig(SECRET, "X-Sig", "hex")
    old = sign("the-previous-secret-0123456789", BODY)
    assert _reason(config, BODY, f"{old}, {sign(SECRET, BODY)}") is None
    assert _reason(config, BODY, f"{old} {old}") == "bad_signature"


def test_timestamp_is_signed_and_must_be_recent() -> None:
    config = SigningConfig(SECRET, "Api-Signature", "hex", "Api-Timestamp", tolerance_seconds=300)
    ts = str(int(NOW.timestamp()))
    assert _reason(config, BODY, sign(SECRET, BODY, timestamp=ts), ts) is None
    iso = (NOW - timedelta(seconds=60)).isoformat()
    assert _reason(config, BODY, sign(SECRET, BODY, timestamp=iso), iso) is None
    old = str(int((NOW - timedelta(seconds=301)).timestamp()))
    assert _reason(config, BODY, sign(SECRET, BODY, timestamp=old), old) == "stale_timestamp"
    assert _reason(config, BODY, sign(SECRET, BODY), ts) == "bad_signature"  # the body alone is not enough
    assert _reason(config, BODY, sign(SECRET, BODY, timestamp=ts), None) == "missing_timestamp"
    assert _reason(config, BODY, sign(SECRET, BODY, timestamp="soon"), "soon") == "bad_timestamp"
    millis = str(int(NOW.timestamp() * 1000))
    assert _reason(config, BODY, sign(SECRET, BODY, timestamp=millis), millis) is None


def test_describe_refuses_what_is_not_the_providers_shape() -> None:
    with pytest.raises(PayloadError) as e:
        describe("servicetitan", {"eventType": "Job.Updated"})
    assert e.value.field == "data"
    with pytest.raises(PayloadError) as e:
        describe("housecallpro", {"event": "job.completed"})
    assert e.value.field == "job"
    with pytest.raises(PayloadError) as e:
        describe("generic", {"provider": "x", "event_type": "y", "external_id": "1", "timestamp": "yesterday"})
    assert e.value.field == "timestamp"
    info = describe(
        "servicetitan",
        {
            "eventId": "e1",
            "eventType": "Invoice.Created",
            "data": {"id": 5, "job": {"id": 9}, "modifiedOn": "2026-12-01T12:00:00.1234567Z"},
        },
    )
    assert (info.event_id, info.external_id) == ("e1", "9")  # an invoice changes its job's routing
    assert info.occurred_at == datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
