"""Builders and checks for tests of the Housecall Pro provider (`integration_core/providers/housecallpro/`).

- `connection(account, url, mode=…)`: a `HousecallProConnection` to a sandbox account.
- `delivery_request(**overrides)` / `unique_homeowner()`: referrals with distinctive homeowner data.
- `validating_provider(config)`: a provider whose every exchange is validated against `housecall.v1.yaml`
  (async context manager; fails on exit if any request or response violated the definition).
- `assert_safe(exc, …)`: no secret and no homeowner datum in an error's text.
- `hcp_connection_body(account, url, …)`: the admin-API/`ConnectionCreate` body of a Housecall Pro connection.
- `add_hcp_receiver(db, hcp, mode=…)`: a receiving company connected to a fresh sandbox account (stored as the
  admin API stores it); `hcp_delivered(hcp, company_id, mode)`: records per marker at the sandbox.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine

from integration_core.db.engine import session_scope
from integration_core.providers.base import DeliveryRequest
from integration_core.providers.housecallpro.config import HousecallProConnection
from integration_core.providers.housecallpro.provider import HousecallProProvider
from integration_core.referrals.directory import create_company, upsert_connection
from integration_core.schemas import CompanyCreate, ConnectionCreate
from sandboxes.housecallpro.spec import ValidatingTransport
from tests.support.config import TEST_SECRET_KEY
from tests.support.housecallpro import HcpAccount, HcpSandbox
from tests.support.providers import assert_no_leak, unique_homeowner

__all__ = [
    "HOMEOWNER_EMAIL",
    "HOMEOWNER_NAME",
    "HOMEOWNER_PHONE",
    "STREET",
    "add_hcp_receiver",
    "assert_safe",
    "connection",
    "delivery_request",
    "hcp_connection_body",
    "hcp_delivered",
    "unique_homeowner",
    "validating_provider",
]

HOMEOWNER_NAME = "Rosalind Quintero-Haas"
HOMEOWNER_PHONE = "(310) 555-0188"
HOMEOWNER_EMAIL = "rosalind.haas@example.com"
STREET = "808 Canyon View Drive"


def connection(account: HcpAccount, base_url: str, *, mode: str = "lead", **overrides: Any) -> HousecallProConnection:
    """A connection to a sandbox account (the input rules apply: loopback URL, bounded rates)."""
    values: dict[str, Any] = {
        "environment": "sandbox",
        "base_url": base_url,
        "company_id": account.company_id,
        "api_key": account.api_key,
        "delivery_mode": mode,
        "rate_limit_per_second": 50,
        "rate_limit_burst": 50,
    }
    values.update(overrides)
    return HousecallProConnection(**values)


def hcp_connection_body(account: HcpAccount, base_url: str, *, mode: str = "lead", **overrides: Any) -> dict[str, Any]:
    """The body that creates this connection through the admin API / `ConnectionCreate`."""
    body: dict[str, Any] = {
        "provider": "housecallpro",
        "environment": "sandbox",
        "base_url": base_url,
        "company_id": account.company_id,
        "api_key": account.api_key,
        "delivery_mode": mode,
    }
    body.update(overrides)
    return body


def delivery_request(**overrides: Any) -> DeliveryRequest:
    """A referral with distinctive homeowner data (so a leak into a message is detectable)."""
    values: dict[str, Any] = {
        "routing_id": uuid.uuid4(),
        "summary": "Outlets in the kitchen dead after storm",
        "street": STREET,
        "city": "Beverly Hills",
        "state": "CA",
        "zip": "90210",
        "homeowner_name": HOMEOWNER_NAME,
        "homeowner_phone": HOMEOWNER_PHONE,
        "homeowner_email": HOMEOWNER_EMAIL,
        "category": "electrical",
        "referring_company_name": "Acme Plumbing",
        "created_at": datetime.now(UTC),
    }
    values.update(overrides)
    return DeliveryRequest(**values)


@contextlib.asynccontextmanager
async def validating_provider(config: HousecallProConnection, **kwargs: Any) -> AsyncIterator[HousecallProProvider]:
    """A provider over real HTTP whose every exchange is validated against Housecall Pro's definition."""
    transport = ValidatingTransport(httpx.AsyncHTTPTransport())
    provider = HousecallProProvider(config, transport=transport, **kwargs)
    try:
        yield provider
    finally:
        await provider.aclose()
    assert transport.exchanges > 0
    transport.assert_clean()


def assert_safe(
    exc: BaseException,
    *,
    config: HousecallProConnection | None = None,
    request: DeliveryRequest | None = None,
    extra: Iterable[str] = (),
) -> None:
    """No secret and no homeowner datum appears in the exception's str, repr, args or field errors."""
    secrets = [] if config is None else [config.api_key.get_secret_value()]
    assert_no_leak(exc, secrets=secrets, request=request, extra=extra)


def add_hcp_receiver(
    db: Engine,
    hcp: HcpSandbox,
    *,
    mode: str = "lead",
    rate: float = 60.0,
    burst: int = 10,
    sandbox_rate: float | None = None,
) -> tuple[uuid.UUID, HcpAccount]:
    """A receiving company connected to a fresh Housecall Pro sandbox account; returns (company id, account)."""
    limit = sandbox_rate or rate
    account = hcp.create_account(rate=limit, burst=max(1, int(limit)))
    with session_scope(db) as session:
        company = create_company(
            session,
            CompanyCreate(name=f"HCP receiver {account.company_id[-8:]}", service_zip_codes=["90210"]),
            actor="test",
        )
        body = hcp_connection_body(account, hcp.url, mode=mode, rate_limit_per_second=rate, rate_limit_burst=burst)
        upsert_connection(
            session, company.id, ConnectionCreate.model_validate(body), secret_key=TEST_SECRET_KEY, actor="test"
        )
        return company.id, account


def hcp_delivered(hcp: HcpSandbox, company_id: str, mode: str) -> dict[str, int]:
    """Marker → how many leads (lead mode) or jobs (job mode) carry it in their tags at the sandbox."""
    markers = hcp.inspect(company_id)["markers"]["leads" if mode == "lead" else "jobs"]
    return {marker: places.get("tags", 0) for marker, places in markers.items() if places.get("tags")}
