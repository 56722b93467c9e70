"""Builders and checks for the ServiceTitan client and provider tests: connections to sandbox tenants, referrals
with distinctive homeowner data, and the check that no secret or homeowner datum leaks into an error."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from integration_core.providers.base import DeliveryRequest
from integration_core.providers.servicetitan.config import ConnectionConfig
from tests.support.providers import assert_no_leak, unique_homeowner
from tests.support.sandbox import TenantCreds

__all__ = [
    "HOMEOWNER_EMAIL",
    "HOMEOWNER_NAME",
    "HOMEOWNER_PHONE",
    "STREET",
    "assert_safe",
    "connection",
    "delivery_request",
    "unique_homeowner",
]

HOMEOWNER_NAME = "Jane Quinlan Homeowner"
HOMEOWNER_PHONE = "(512) 555-0199"
HOMEOWNER_EMAIL = "jane.homeowner@example.com"
STREET = "4242 Privet Drive"


def connection(creds: TenantCreds, base_url: str, *, mode: str = "booking", **overrides: Any) -> ConnectionConfig:
    """A connection to a sandbox tenant, with every id the tenant offers."""
    values: dict[str, Any] = {
        "environment": "sandbox",
        "base_url": base_url,
        "tenant_id": creds.tenant_id,
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
        "app_key": creds.app_key,
        "delivery_mode": mode,
        "booking_provider_id": creds.booking_provider_id,
        "business_unit_id": creds.business_unit_id,
        "job_type_id": creds.job_type_id,
        "campaign_id": creds.campaign_id,
        "external_data_guid": creds.external_data_guid,
    }
    values.update(overrides)
    return ConnectionConfig(**values)


def delivery_request(**overrides: Any) -> DeliveryRequest:
    """A referral with distinctive homeowner data (so a leak into a message is detectable)."""
    values: dict[str, Any] = {
        "routing_id": uuid.uuid4(),
        "summary": "Water heater leaking onto the garage floor",
        "street": STREET,
        "city": "Austin",
        "state": "TX",
        "zip": "78701",
        "homeowner_name": HOMEOWNER_NAME,
        "homeowner_phone": HOMEOWNER_PHONE,
        "homeowner_email": HOMEOWNER_EMAIL,
        "category": "plumbing",
        "referring_company_name": "Acme Electric",
        "created_at": datetime.now(UTC),
    }
    values.update(overrides)
    return DeliveryRequest(**values)


def assert_safe(
    exc: BaseException,
    *,
    config: ConnectionConfig | None = None,
    request: DeliveryRequest | None = None,
    extra: Iterable[str] = (),
) -> None:
    """No secret and no homeowner datum appears in the exception's str, repr, args or field errors."""
    secrets = [] if config is None else [config.client_secret.get_secret_value(), config.app_key.get_secret_value()]
    assert_no_leak(exc, secrets=secrets, request=request, extra=extra)
