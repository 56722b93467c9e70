"""Access tokens shaped like ServiceTitan's (a JWT carrying `tenant`, `client_id`, `exp`, `scope`, `jti`).

Signed with HMAC-SHA256 under a per-process secret (ServiceTitan signs RS256; nobody but the sandbox checks
the signature). Validity also needs the `jti` to be live in the tenant's token registry, which is how
revocation works.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from typing import Any

SCOPES = (
    "tn.crm.bookings:r",
    "tn.crm.bookings:w",
    "tn.crm.customers:r",
    "tn.crm.customers:w",
    "tn.crm.locations:r",
    "tn.crm.locations:w",
    "tn.jpm.jobs:r",
    "tn.jpm.jobs:w",
    "tn.jpm.jobtypes:r",
    "tn.settings.businessunits:r",
    "tn.mkt.campaigns:r",
    "tn.acc.invoices:r",
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def issue(
        self, *, issuer: str, tenant_id: str, client_id: str, now: float, lifetime_s: float
    ) -> tuple[str, dict[str, Any]]:
        claims: dict[str, Any] = {
            "nbf": int(now),
            # Whole seconds like ServiceTitan's; short test lifetimes keep millisecond precision instead.
            "exp": int(now) + math.ceil(lifetime_s) if lifetime_s >= 60 else round(now + lifetime_s, 3),
            "iss": issuer,
            "client_id": client_id,
            "tenant": tenant_id,
            "jti": secrets.token_hex(16),
            "iat": int(now),
            "scope": list(SCOPES),
        }
        header = {"alg": "HS256", "typ": "at+jwt", "kid": "sandbox"}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = hmac.new(self._secret, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}", claims

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this sandbox signed, or None (expiry and revocation are checked by callers)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(expected, _unb64(parts[2])):
                return None
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeDecodeError):
            return None
        return claims if isinstance(claims, dict) else None
