"""Fixtures for everything ServiceTitan: a sandbox served over loopback, and transports that validate every
exchange against ServiceTitan's OpenAPI definitions.

- `sandbox` — base URL (str) of the sandbox, reset to its seeded state before the test. One server per test
  session (starting one is cheap, but the definitions take ~2 s to load once).
- `sandbox_handle` — the same sandbox with its in-process state (`.sandbox`, `.config`, `.app`) and helpers
  for the control API (`create_tenant`, `token`, `inspect`, `put_faults`, ...).
- `sandbox_with` — a factory for an extra, separately configured sandbox: `url, handle = sandbox_with(cfg)`.
- `st_transport` / `st_sync_transport` — `ValidatingTransport` / `SyncValidatingTransport` over real HTTP;
  the test fails at teardown if any request or response violated the definitions.
- `st_client` — a sync httpx client on `sandbox` through `st_sync_transport`.
- `demo_tenant` / `fresh_tenant` — credentials of a seeded demo tenant / a factory of new runtime tenants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from integration_core.local.demo import DEMO_TENANTS
from integration_core.local.http_server import serve_in_thread
from sandboxes.servicetitan import Sandbox, SandboxConfig, create_app
from sandboxes.servicetitan.spec import (
    SyncValidatingTransport,
    ValidatingTransport,
    get_definitions,
)


@dataclass(frozen=True)
class TenantCreds:
    tenant_id: str
    client_id: str
    client_secret: str
    app_key: str
    booking_provider_id: int
    business_unit_id: int
    job_type_id: int
    campaign_id: int
    external_data_guid: str

    @classmethod
    def from_control(cls, payload: dict[str, Any]) -> TenantCreds:
        return cls(
            tenant_id=payload["tenant_id"],
            client_id=payload["client_id"],
            client_secret=payload["client_secret"],
            app_key=payload["app_keys"][0],
            booking_provider_id=payload["booking_provider_ids"][0],
            business_unit_id=payload["business_unit_ids"][0],
            job_type_id=payload["job_type_ids"][0],
            campaign_id=payload["campaign_ids"][0],
            external_data_guid=payload["external_data_guid"],
        )

    def token_form(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret}

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "ST-App-Key": self.app_key}


@dataclass
class SandboxHandle:
    url: str
    app: Starlette
    config: SandboxConfig

    @property
    def sandbox(self) -> Sandbox:
        """The live state (read it from tests; change it through the control API, which runs on the server loop)."""
        state: Sandbox = self.app.state.sandbox
        return state

    def _control(self, method: str, path: str, json: Any = None) -> Any:
        response = httpx.request(method, f"{self.url}/_sandbox{path}", json=json, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._control("POST", "/reset")

    def create_tenant(self, **fields: Any) -> TenantCreds:
        return TenantCreds.from_control(self._control("POST", "/tenants", fields))

    def patch_tenant(self, tenant_id: str, **fields: Any) -> Any:
        return self._control("PATCH", f"/tenants/{tenant_id}", fields)

    def put_faults(self, tenant_id: str, **faults: Any) -> Any:
        return self._control("PUT", f"/tenants/{tenant_id}/faults", faults)

    def storm(self, tenant_id: str, **storm: Any) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/storm", storm)

    def revoke_tokens(self, tenant_id: str) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/revoke-tokens")

    def advance_booking(self, tenant_id: str, booking_id: int, status: str, **extra: Any) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/bookings/{booking_id}/advance", {"status": status, **extra})

    def advance_job(self, tenant_id: str, job_id: int, status: str, **extra: Any) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/jobs/{job_id}/advance", {"status": status, **extra})

    def adjust_invoice(self, tenant_id: str, invoice_id: int, total: Any) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/invoices/{invoice_id}/adjust", {"total": total})

    def office(self, **config: Any) -> Any:
        return self._control("PUT", "/office", config)

    def office_tick(self) -> Any:
        return self._control("POST", "/office/tick")

    def inspect(self, tenant_id: str, *, timestamps: bool = False) -> Any:
        return self._control("GET", f"/tenants/{tenant_id}/inspect" + ("?timestamps=true" if timestamps else ""))

    def token(self, creds: TenantCreds) -> str:
        response = httpx.post(f"{self.url}/connect/token", data=creds.token_form(), timeout=10)
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


@contextlib.contextmanager
def _serve(config: SandboxConfig) -> Iterator[SandboxHandle]:
    app = create_app(config)
    with serve_in_thread(app) as url:
        yield SandboxHandle(url, app, config)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxHandle]:
    """One sandbox for the session (tests get it reset through `sandbox` / `sandbox_handle`)."""
    get_definitions().load()  # once, up front: the first validated request would otherwise wait ~2 s
    with _serve(SandboxConfig()) as handle:
        yield handle


@pytest.fixture()
def sandbox(sandbox_server: SandboxHandle) -> str:
    """Base URL of a sandbox in its seeded state (records, counters, faults, limits reset before the test)."""
    sandbox_server.reset()
    return sandbox_server.url


@pytest.fixture()
def sandbox_handle(sandbox_server: SandboxHandle, sandbox: str) -> SandboxHandle:
    """The (reset) session sandbox with access to its state and control-API helpers."""
    return sandbox_server


@pytest.fixture()
def sandbox_with() -> Iterator[Callable[[SandboxConfig], SandboxHandle]]:
    """Start extra sandboxes with their own `SandboxConfig`; each stops at the end of the test."""
    stack = contextlib.ExitStack()

    def start(config: SandboxConfig) -> SandboxHandle:
        return stack.enter_context(_serve(config))

    with stack:
        yield start


@pytest.fixture()
def st_transport() -> Iterator[ValidatingTransport]:
    """Async transport validating every exchange; fails the test at teardown on any violation."""
    transport = ValidatingTransport(httpx.AsyncHTTPTransport())
    yield transport
    transport.assert_clean()


@pytest.fixture()
def st_sync_transport() -> Iterator[SyncValidatingTransport]:
    transport = SyncValidatingTransport(httpx.HTTPTransport())
    yield transport
    transport.assert_clean()


@pytest.fixture()
def st_client(sandbox: str, st_sync_transport: SyncValidatingTransport) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox, transport=st_sync_transport, timeout=10) as client:
        yield client


@pytest.fixture()
def demo_tenant(sandbox: str) -> TenantCreds:
    demo = DEMO_TENANTS[0]
    return TenantCreds(
        tenant_id=demo.tenant_id,
        client_id=demo.client_id,
        client_secret=demo.client_secret,
        app_key=demo.app_key,
        booking_provider_id=demo.booking_provider_id,
        business_unit_id=demo.business_unit_id,
        job_type_id=demo.job_type_id,
        campaign_id=demo.campaign_id,
        external_data_guid=demo.external_data_guid,
    )


@pytest.fixture()
def fresh_tenant(sandbox_handle: SandboxHandle) -> Callable[..., TenantCreds]:
    """`fresh_tenant(rate=5, burst=5, ...)` creates a new runtime tenant (generated credentials unless given)."""
    return sandbox_handle.create_tenant


# -- payloads and a tenant-bound client, shared by the sandbox tests ---------------------------------

ADDRESS = {"street": "1 Main St", "city": "Austin", "state": "TX", "zip": "78701", "country": "USA"}


def booking_payload(external_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": "TradeEngage",
        "name": "Jane Doe",
        "summary": "AC not cooling",
        "isFirstTimeClient": True,
        "externalId": external_id,
        "address": dict(ADDRESS),
        "contacts": [{"type": "MobilePhone", "value": "5125550100"}],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def customer_payload(name: str = "Jane Doe", phone: str = "5125550100", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "type": "Residential",
        "address": dict(ADDRESS),
        "contacts": [{"type": "MobilePhone", "value": phone}],
        "locations": [{"name": f"{name} home", "address": dict(ADDRESS)}],
    }
    body.update(overrides)
    return body


def job_payload(creds: TenantCreds, customer_id: int, location_id: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customerId": customer_id,
        "locationId": location_id,
        "businessUnitId": creds.business_unit_id,
        "jobTypeId": creds.job_type_id,
        "priority": "Normal",
        "campaignId": creds.campaign_id,
        "summary": "Referred by Acme: no heat",
        "appointments": [{"start": "2030-01-05T16:00:00Z", "end": "2030-01-05T18:00:00Z"}],
    }
    body.update(overrides)
    return body


class TenantClient:
    """A sync client for one tenant: fetches a token, sends `ST-App-Key`, formats `{tenant}` in paths."""

    def __init__(self, client: httpx.Client, creds: TenantCreds) -> None:
        self.client = client
        self.creds = creds
        self.token = self.fetch_token()

    def fetch_token(self) -> str:
        response = self.client.post("/connect/token", data=self.creds.token_form())
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def path(self, template: str) -> str:
        return template.format(tenant=self.creds.tenant_id, bp=self.creds.booking_provider_id)

    def request(self, method: str, template: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.creds.headers(self.token), **kwargs.pop("headers", {})}
        return self.client.request(method, self.path(template), headers=headers, **kwargs)

    def get(self, template: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", template, **kwargs)

    def post(self, template: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", template, **kwargs)

    def create_booking(self, external_id: str, **overrides: Any) -> dict[str, Any]:
        response = self.post(BOOKINGS, json=booking_payload(external_id, **overrides))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def create_customer(self, **overrides: Any) -> dict[str, Any]:
        response = self.post("/crm/v2/tenant/{tenant}/customers", json=customer_payload(**overrides))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def create_job(self, **overrides: Any) -> dict[str, Any]:
        customer = self.create_customer()
        body = job_payload(self.creds, customer["id"], customer["locations"][0]["id"], **overrides)
        response = self.post(JOBS, json=body)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job


BOOKINGS = "/crm/v2/tenant/{tenant}/booking-provider/{bp}/bookings"
JOBS = "/jpm/v2/tenant/{tenant}/jobs"


@pytest.fixture()
def st(st_client: httpx.Client, demo_tenant: TenantCreds) -> TenantClient:
    """The first demo tenant, authenticated, through the validating transport."""
    return TenantClient(st_client, demo_tenant)
