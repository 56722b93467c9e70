"""Webhook signatures: HMAC-SHA256 over the raw request body, compared in constant time.

With a timestamp header configured, the signed message is ``<timestamp>.<raw body>`` and the timestamp (Unix
seconds, or ISO 8601) must lie within the tolerance of our clock, so a captured call cannot be replayed later.
A signature value may carry a ``sha256=`` prefix (GitHub style) and several comma- or space-separated
candidates (secret rotation); any one valid candidate is enough.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Encoding = Literal["hex", "base64"]


class SignatureError(Exception):
    """The call is not authentic. ``reason`` is a short code counted in `webhook_rejections`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SigningConfig:
    secret: str
    header: str
    encoding: Encoding = "hex"
    timestamp_header: str | None = None
    tolerance_seconds: int = 300


def signed_message(body: bytes, timestamp: str | None) -> bytes:
    return body if timestamp is None else timestamp.encode() + b"." + body


def sign(secret: str, body: bytes, *, encoding: Encoding = "hex", timestamp: str | None = None) -> str:
    """The signature a provider sends for ``body`` (and ``timestamp``, when one is part of the scheme)."""
    digest = hmac.new(secret.encode(), signed_message(body, timestamp), hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def _decode(candidate: str, encoding: Encoding) -> bytes | None:
    value = candidate.strip()
    if value.lower().startswith("sha256="):
        value = value[7:]
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (ValueError, binascii.Error):
        return None


def parse_timestamp(raw: str) -> datetime | None:
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            return None  # "nan", "inf": not a time (and no exception: a 401, never a 500)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None  # beyond what a datetime holds
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def verify(
    config: SigningConfig,
    body: bytes,
    signature: str | None,
    timestamp: str | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` signs ``body`` (and ``timestamp``) with the secret."""
    if not signature or not signature.strip():
        raise SignatureError("missing_signature", f"missing signature header {config.header}")
    if config.timestamp_header is not None:
        if not timestamp:
            raise SignatureError("missing_timestamp", f"missing timestamp header {config.timestamp_header}")
        at = parse_timestamp(timestamp)
        if at is None:
            raise SignatureError("bad_timestamp", f"{config.timestamp_header} is not a timestamp")
        skew = abs(((now or datetime.now(UTC)) - at).total_seconds())
        if skew > config.tolerance_seconds:
            raise SignatureError("stale_timestamp", f"timestamp outside the {config.tolerance_seconds} s tolerance")
    else:
        timestamp = None
    expected = hmac.new(config.secret.encode(), signed_message(body, timestamp), hashlib.sha256).digest()
    ok = False
    for candidate in signature.replace(",", " ").split():
        given = _decode(candidate, config.encoding)
        # compare every candidate (no early exit on the first match: timing says nothing about which one)
        if given is not None and hmac.compare_digest(given, expected):
            ok = True
    if not ok:
        raise SignatureError("bad_signature", "signature does not match")
