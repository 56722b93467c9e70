"""The ServiceTitan sandbox as the tests see it.

`SandboxHandle` is the one handle type: the sandbox's base URL and a client on its control API (`/_sandbox`,
docs/sandbox.md), with a method per control call. `serve_sandbox` runs a sandbox in its own process, as a real
provider would be: what it measures (request times, 1-second windows) is not distorted by the test process.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from integration_core.local.demo import DEMO_TENANTS
from integration_core.local.http_server import free_port
from tests.support.config import ROOT

BOOKINGS = "/crm/v2/tenant/{tenant}/booking-provider/{bp}/bookings"
JOBS = "/jpm/v2/tenant/{tenant}/jobs"
ADDRESS = {"street": "1 Main St", "city": "Austin", "state": "TX", "zip": "78701", "country": "USA"}


@dataclass(frozen=True)
class TenantCreds:
    """What a sandbox tenant offers a connection: credentials and the ids a booking or job refers to."""

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

    @classmethod
    def demo(cls, index: int = 0) -> TenantCreds:
        """A tenant the sandbox seeds at start-up (`integration_core.local.demo.DEMO_TENANTS`)."""
        demo = DEMO_TENANTS[index]
        return cls(
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

    def token_form(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret}

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "ST-App-Key": self.app_key}


@dataclass
class SandboxHandle:
    """A running sandbox: `url` for the code under test, `control` (an httpx client on `url`) for the test."""

    url: str
    control: httpx.Client

    def _control(self, method: str, path: str, json: Any = None) -> Any:
        response = self.control.request(method, f"/_sandbox{path}", json=json)
        assert response.is_success, f"{method} /_sandbox{path}: {response.status_code} {response.text}"
        return response.json()

    def reset(self) -> None:
        """Records, counters, faults and limits cleared; runtime tenants dropped; the seeded ones kept."""
        self._control("POST", "/reset")

    def create_tenant(self, **fields: Any) -> TenantCreds:
        """A runtime tenant (`tenant_id`, credentials, `rate`, `burst`, ... generated unless given)."""
        return TenantCreds.from_control(self._control("POST", "/tenants", fields))

    def patch_tenant(self, tenant_id: str, **fields: Any) -> Any:
        return self._control("PATCH", f"/tenants/{tenant_id}", fields)

    def put_faults(self, tenant_id: str, **faults: Any) -> Any:
        return self._control("PUT", f"/tenants/{tenant_id}/faults", faults)

    def storm(self, tenant_id: str, **storm: Any) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/storm", storm)

    def revoke_tokens(self, tenant_id: str) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/revoke-tokens")

    def advance_booking(self, tenant_id: str, booking_id: int | str, status: str, **extra: Any) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/bookings/{booking_id}/advance", {"status": status, **extra})

    def advance_job(self, tenant_id: str, job_id: int | str, status: str, **extra: Any) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/jobs/{job_id}/advance", {"status": status, **extra})

    def adjust_invoice(self, tenant_id: str, invoice_id: int, total: Any) -> Any:
        return self._control("POST", f"/tenants/{tenant_id}/invoices/{invoice_id}/adjust", {"total": total})

    def office(self, **config: Any) -> Any:
        return self._control("PUT", "/office", config)

    def office_tick(self) -> Any:
        return self._control("POST", "/office/tick")

    def inspect(self, tenant_id: str, *, timestamps: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = self._control(
            "GET", f"/tenants/{tenant_id}/inspect" + ("?timestamps=true" if timestamps else "")
        )
        return info

    def token(self, creds: TenantCreds) -> str:
        response = self.control.post("/connect/token", data=creds.token_form())
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


@contextlib.contextmanager
def serve_sandbox(*, demo_tenants: bool = True, startup_timeout: float = 60) -> Iterator[str]:
    """`si sandbox serve` on a free port in its own process; yields its base URL once its definitions are loaded
    (requests would wait for them). Stopped (SIGTERM) on exit."""
    port = free_port()
    argv = [sys.executable, "-m", "integration_core.cli", "sandbox", "serve", "--port", str(port)]
    if not demo_tenants:
        argv.append("--no-demo-tenants")
    with serve_sandbox_process(argv, f"http://127.0.0.1:{port}", startup_timeout=startup_timeout) as url:
        yield url


@contextlib.contextmanager
def serve_sandbox_process(
    argv: list[str],
    url: str,
    *,
    name: str = "the sandbox",
    startup_timeout: float = 60,
    retry_on: tuple[type[Exception], ...] = (httpx.HTTPError,),
) -> Iterator[str]:
    """Run a sandbox process (``argv``, serving ``url``); yield ``url`` once its definitions are loaded (health
    checks failing with ``retry_on`` are retried); SIGTERM (then SIGKILL) on exit."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe nobody drains: a chatty server would block
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    stderr.seek(0)
                    raise AssertionError(f"the sandbox exited: {stderr.read().decode(errors='replace')[-2000:]}")
                with contextlib.suppress(*retry_on):
                    if httpx.get(url + "/_sandbox/health", timeout=1).json()["definitions_loaded"]:
                        break
                assert time.monotonic() < deadline, f"{name} did not start"
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# -- payloads and a tenant-bound client -------------------------------------------------------------------


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


def sandbox_marker_counts(sandbox: SandboxHandle, tenant_id: str, mode: str) -> dict[str, int]:
    """Records per routing marker at the sandbox (booking externalId, or the job's externalData marker)."""
    markers = sandbox.inspect(tenant_id)["markers"]
    if mode == "booking":
        return dict(markers["bookings"])
    return {k.split("=", 1)[1]: v for k, v in markers["jobs"].items()}
