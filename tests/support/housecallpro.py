"""The Housecall Pro sandbox as the tests see it (`sandboxes/housecallpro`, docs/sandbox.md).

- `serve_hcp_sandbox()` runs `python -m sandboxes.housecallpro` on a free port in its own process (as a real
  provider would be) and yields its base URL once its definition is loaded.
- `HcpSandbox` wraps the control API (`/_sandbox/...`): accounts, faults, storms, lifecycle, office, inspection.
- `HcpClient` is a sync httpx client for one account (`Authorization: Token <api-key>`) whose transport validates
  every request and response against `housecall.v1.yaml`; `assert_clean()` fails on any violation.
- Fixtures (`hcp_sandbox_url` session-wide, `hcp` reset per test, `hcp_account` factory) for a test module or a
  conftest to import: `from tests.support.housecallpro import hcp, hcp_account, hcp_sandbox_url  # noqa: F401`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from integration_core.local.demo import DEMO_HCP_ACCOUNTS
from integration_core.local.http_server import free_port
from sandboxes.housecallpro import HcpConfig, create_app
from sandboxes.housecallpro.spec import SyncValidatingTransport
from tests.support.sandbox import serve_sandbox_process

ADDRESS = {"street": "12 Ocean Ave", "city": "Beverly Hills", "state": "CA", "zip": "90210", "country": "US"}


@dataclass(frozen=True)
class HcpAccount:
    company_id: str
    api_key: str
    name: str

    @classmethod
    def demo(cls, index: int = 0) -> HcpAccount:
        demo = DEMO_HCP_ACCOUNTS[index]
        return cls(demo.company_id, demo.api_key, demo.name)


@contextlib.contextmanager
def serve_hcp_sandbox(*extra_args: str, startup_timeout: float = 60) -> Iterator[str]:
    """`python -m sandboxes.housecallpro` on a free port; yields its URL once the definition is loaded."""
    port = free_port()
    argv = [sys.executable, "-m", "sandboxes.housecallpro", "--port", str(port), "--log-level", "warning", *extra_args]
    with serve_sandbox_process(
        argv,
        f"http://127.0.0.1:{port}",
        name="the Housecall Pro sandbox",
        startup_timeout=startup_timeout,
        retry_on=(httpx.HTTPError, ValueError),
    ) as url:
        yield url


@contextlib.contextmanager
def serve_hcp_in_thread(config: HcpConfig | None = None) -> Iterator[tuple[str, Starlette]]:
    """A sandbox served by uvicorn in a thread of this process (real HTTP over loopback), for tests that need
    its in-process side: yields (base URL, app); `app.state.sandbox.add_listener(...)` attaches event listeners."""
    import threading

    import uvicorn

    app = create_app(config or HcpConfig())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="hcp-sandbox", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the in-thread sandbox did not start"
            time.sleep(0.02)
        app.state.definitions.wait_loaded(30)
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class HcpSandbox:
    """A running sandbox: `url` for the code under test, `control` (an httpx client on `url`) for the test."""

    url: str
    control: httpx.Client

    def call(self, method: str, path: str, json: Any = None, *, expect: int | None = None) -> Any:
        response = self.control.request(method, f"/_sandbox{path}", json=json)
        if expect is not None:
            assert response.status_code == expect, f"{method} /_sandbox{path}: {response.status_code} {response.text}"
        else:
            assert response.is_success, f"{method} /_sandbox{path}: {response.status_code} {response.text}"
        return response.json()

    def reset(self) -> None:
        self.call("POST", "/reset")

    def create_account(self, **fields: Any) -> HcpAccount:
        body = self.call("POST", "/accounts", fields, expect=201)
        return HcpAccount(body["company_id"], body["api_keys"][0], body["name"])

    def delete_account(self, company_id: str) -> Any:
        return self.call("DELETE", f"/accounts/{company_id}")

    def patch_account(self, company_id: str, **fields: Any) -> Any:
        return self.call("PATCH", f"/accounts/{company_id}", fields)

    def put_faults(self, company_id: str, **faults: Any) -> Any:
        return self.call("PUT", f"/accounts/{company_id}/faults", faults)

    def clear_faults(self, company_id: str) -> Any:
        return self.call("DELETE", f"/accounts/{company_id}/faults")

    def storm(self, company_id: str, **storm: Any) -> Any:
        return self.call("POST", f"/accounts/{company_id}/storm", storm)

    def advance_lead(self, company_id: str, lead_id: str, status: str, **extra: Any) -> Any:
        return self.call("POST", f"/accounts/{company_id}/leads/{lead_id}/advance", {"status": status, **extra})

    def advance_job(self, company_id: str, job_id: str, status: str, **extra: Any) -> Any:
        return self.call("POST", f"/accounts/{company_id}/jobs/{job_id}/advance", {"status": status, **extra})

    def pay_invoice(self, company_id: str, invoice_id: str) -> Any:
        return self.call("POST", f"/accounts/{company_id}/invoices/{invoice_id}/pay")

    def office(self, **config: Any) -> Any:
        return self.call("PUT", "/office", config)

    def office_tick(self) -> Any:
        return self.call("POST", "/office/tick")

    def inspect(self, company_id: str, *, pattern: str | None = None) -> dict[str, Any]:
        report: dict[str, Any] = self.control.get(
            f"/_sandbox/accounts/{company_id}/inspect", params={"pattern": pattern} if pattern else None
        ).json()
        return report

    def events(self) -> dict[str, Any]:
        out: dict[str, Any] = self.call("GET", "/events")
        return out


class HcpClient:
    """A sync client for one account; every exchange is validated against Housecall Pro's definition."""

    def __init__(self, url: str, account: HcpAccount, *, timeout: float = 30) -> None:
        self.account = account
        self.transport = SyncValidatingTransport()
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Token {account.api_key}"},
            transport=self.transport,
            timeout=timeout,
        )

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.delete(path, **kw)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, **kw)

    def assert_clean(self) -> None:
        self.transport.assert_clean()

    def close(self) -> None:
        self.http.close()


def customer_payload(marker: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "first_name": "Jane",
        "last_name": "Doe",
        "email": "jane@example.com",
        "mobile_number": "3105550100",
        "addresses": [dict(ADDRESS)],
    }
    if marker:
        body["tags"] = [marker]
    body.update(overrides)
    return body


def lead_payload(marker: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {"first_name": "Jane", "last_name": "Doe", "mobile_number": "3105550100"},
        "address": {k: v for k, v in ADDRESS.items() if k != "country"},
        "lead_source": "TradeEngage",
        "tags": [marker],
        "note": f"TradeEngage referral {marker}: panel trips",
    }
    body.update(overrides)
    return body


def job_payload(customer_id: str, address_id: str, marker: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "address_id": address_id,
        "tags": [marker],
        "lead_source": "TradeEngage",
        "notes": f"TradeEngage referral {marker}",
        "line_items": [{"name": "Service call", "unit_price": 12900, "quantity": 1}],
    }
    body.update(overrides)
    return body


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hcp_sandbox_url() -> Iterator[str]:
    """One Housecall Pro sandbox (demo accounts seeded, office off) in its own process for the session."""
    with serve_hcp_sandbox() as url:
        yield url


@pytest.fixture()
def hcp(hcp_sandbox_url: str) -> Iterator[HcpSandbox]:
    """The session's sandbox, reset (records, counters, faults, limits; runtime accounts dropped)."""
    with httpx.Client(base_url=hcp_sandbox_url, timeout=30) as control:
        handle = HcpSandbox(hcp_sandbox_url, control)
        handle.reset()
        yield handle


@pytest.fixture()
def hcp_account(hcp: HcpSandbox) -> Iterator[Callable[..., HcpClient]]:
    """A factory: a fresh account (control fields as keyword arguments) and a validating client on it. Every
    client is checked clean (no definition violations) at the end of the test."""
    clients: list[HcpClient] = []

    def make(**fields: Any) -> HcpClient:
        client = HcpClient(hcp.url, hcp.create_account(**fields))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for client in clients:
        client.assert_clean()
