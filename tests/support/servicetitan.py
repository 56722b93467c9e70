"""Builders and checks for the ServiceTitan client and provider tests: connections to sandbox tenants, referrals
with distinctive homeowner data, and the check that no secret or homeowner datum leaks into an error."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from integration_core.providers.base import DeliveryRequest, Permanent
from integration_core.providers.servicetitan.config import ConnectionConfig
from tests.support.sandbox import TenantCreds

HOMEOWNER_NAME = "Jane Quinlan Homeowner"
HOMEOWNER_PHONE = "(512) 555-0199"
HOMEOWNER_EMAIL = "jane.homeowner@example.com"
STREET = "4242 Privet Drive"

_counter = itertools.count(1)


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


def unique_homeowner() -> dict[str, Any]:
    """Homeowner fields nobody else in the tenant has (a fresh phone, e-mail, name and street)."""
    n = next(_counter)
    digits = f"{random.randrange(200, 999)}{random.randrange(200, 999)}{n % 10000:04d}"
    return {
        "homeowner_name": f"Pat Testperson{n}",
        "homeowner_phone": f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
        "homeowner_email": f"pat{n}.{uuid.uuid4().hex[:6]}@example.com",
        "street": f"{100 + n} Elm Street",
    }


def assert_safe(
    exc: BaseException,
    *,
    config: ConnectionConfig | None = None,
    request: DeliveryRequest | None = None,
    extra: Iterable[str] = (),
) -> None:
    """No secret and no homeowner datum appears in the exception's str, repr, args or field errors."""
    texts = [str(exc), repr(exc), *(str(arg) for arg in exc.args)]
    if isinstance(exc, Permanent):
        texts.append(repr(exc.field_errors))
    forbidden = [*extra]
    if config is not None:
        forbidden += [config.client_secret.get_secret_value(), config.app_key.get_secret_value()]
    if request is not None:
        forbidden += request.sensitive_values()
        forbidden += [request.homeowner_name.split()[0], request.street.split()[-2]]
    for text in texts:
        for value in forbidden:
            if value and len(value) >= 4:
                assert value.casefold() not in text.casefold(), f"{value!r} leaked into {text!r}"
