"""Per-connection webhook settings (`webhook_endpoints`) and the documented defaults per provider.

Neither ServiceTitan nor Housecall Pro publishes (in what we have) the header that carries the signature or its
encoding, so both are configurable per connection; the defaults below are our choice, documented in
docs/webhooks.md. The secret is stored Fernet-encrypted (SECRET_KEY, `integration_core.crypto`) and never
returned: operators see only whether one is set.
"""

from __future__ import annotations

import secrets as _secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from integration_core import crypto
from integration_core.audit import record as audit_record
from integration_core.db.models import ProviderConnection, WebhookEndpoint
from integration_core.errors import InvalidInput, NotFound
from integration_core.webhooks.signing import Encoding, SigningConfig

PROVIDERS = ("servicetitan", "housecallpro", "generic")


@dataclass(frozen=True)
class ProviderDefaults:
    signature_header: str
    signature_encoding: Encoding
    timestamp_header: str | None


DEFAULTS: dict[str, ProviderDefaults] = {
    # ServiceTitan v2 webhooks: an optional HMAC key (32-64 characters) per subscription; no timestamp header
    "servicetitan": ProviderDefaults("X-ServiceTitan-Signature", "base64", None),
    # Housecall Pro: a signing secret per subscription; the timestamp is signed with the body
    "housecallpro": ProviderDefaults("Api-Signature", "hex", "Api-Timestamp"),
    # /webhooks/generic: WEBHOOK_GENERIC_SECRET (or the body's `signature` field, docs/webhooks.md)
    "generic": ProviderDefaults("X-Webhook-Signature", "hex", None),
}
MIN_SECRET_LENGTH = 16


def generate_secret() -> str:
    """A 48-character secret (within ServiceTitan's 32-64)."""
    return _secrets.token_urlsafe(36)


@dataclass(frozen=True)
class Endpoint:
    connection_id: uuid.UUID
    company_id: uuid.UUID
    provider: str
    enabled: bool
    signing: SigningConfig


def configure(
    session: Session,
    connection_id: uuid.UUID,
    *,
    secret: str,
    secret_key: str,
    signature_header: str | None = None,
    signature_encoding: str | None = None,
    timestamp_header: str | None = None,
    timestamp_tolerance_seconds: int | None = None,
    enabled: bool = True,
    actor: str = "api",
) -> WebhookEndpoint:
    """Create or replace a connection's webhook settings (provider defaults for what is not given)."""
    connection = session.get(ProviderConnection, connection_id)
    if connection is None:
        raise NotFound("provider connection", connection_id)
    provider = str(connection.provider)
    defaults = DEFAULTS.get(provider, DEFAULTS["generic"])
    errors: list[tuple[tuple[str | int, ...], str]] = []
    if len(secret) < MIN_SECRET_LENGTH:
        errors.append((("secret",), f"must be at least {MIN_SECRET_LENGTH} characters"))
    encoding = signature_encoding or defaults.signature_encoding
    if encoding not in ("hex", "base64"):
        errors.append((("signature_encoding",), "must be hex or base64"))
    if timestamp_tolerance_seconds is not None and timestamp_tolerance_seconds <= 0:
        errors.append((("timestamp_tolerance_seconds",), "must be > 0"))
    if errors:
        raise InvalidInput(errors)
    row = session.get(WebhookEndpoint, connection_id)
    if row is None:
        row = WebhookEndpoint(connection_id=connection_id, provider=provider)
        session.add(row)
    row.provider = provider
    row.secret_encrypted = crypto.encrypt(secret, secret_key)
    row.signature_header = signature_header or defaults.signature_header
    row.signature_encoding = encoding
    row.timestamp_header = timestamp_header if timestamp_header is not None else defaults.timestamp_header
    row.timestamp_header = row.timestamp_header or None
    if timestamp_tolerance_seconds is not None:
        row.timestamp_tolerance_seconds = timestamp_tolerance_seconds
    row.enabled = enabled
    session.flush()
    audit_record(
        session,
        actor=actor,
        action="webhook_endpoint.configure",
        entity_type="provider_connection",
        entity_id=str(connection_id),
        details={"provider": provider, "signature_header": row.signature_header, "encoding": encoding},
    )
    return row


def describe(row: WebhookEndpoint) -> dict[str, Any]:
    """What an operator may see: never the secret."""
    return {
        "connection_id": str(row.connection_id),
        "provider": row.provider,
        "signature_header": row.signature_header,
        "signature_encoding": row.signature_encoding,
        "timestamp_header": row.timestamp_header,
        "timestamp_tolerance_seconds": row.timestamp_tolerance_seconds,
        "enabled": row.enabled,
        "secret_set": bool(row.secret_encrypted),
    }


def load(session: Session, connection_id: uuid.UUID, secret_key: str) -> Endpoint | None:
    """The endpoint of a connection, its secret decrypted (None: no such connection or no webhook settings)."""
    found = session.execute(
        select(WebhookEndpoint, ProviderConnection.company_id)
        .join(ProviderConnection, ProviderConnection.id == WebhookEndpoint.connection_id)
        .where(WebhookEndpoint.connection_id == connection_id)
    ).first()
    if found is None:
        return None
    row, company_id = found
    return Endpoint(
        connection_id=row.connection_id,
        company_id=company_id,
        provider=row.provider,
        enabled=row.enabled,
        signing=SigningConfig(
            secret=crypto.decrypt(row.secret_encrypted, secret_key),
            header=row.signature_header,
            encoding="base64" if row.signature_encoding == "base64" else "hex",
            timestamp_header=row.timestamp_header,
            tolerance_seconds=row.timestamp_tolerance_seconds,
        ),
    )
