"""ServiceTitan fixtures shared by tests/providers/servicetitan and tests/sandboxes/servicetitan (a pytest plugin,
registered in tests/conftest.py). The sandbox itself is the `sandbox` fixture of tests/conftest.py.

- `st_transport` / `st_sync_transport` — `ValidatingTransport` / `SyncValidatingTransport` over real HTTP; the
  test fails at teardown if any request or response violated ServiceTitan's OpenAPI definitions.
- `st_client` — a sync httpx client on the sandbox through `st_sync_transport`.
- `demo_tenant` / `fresh_tenant` — credentials of a seeded demo tenant / a factory of new runtime tenants.
- `st` — the first demo tenant, authenticated, through the validating transport.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from sandboxes.servicetitan.spec import SyncValidatingTransport, ValidatingTransport, get_definitions
from tests.support.sandbox import SandboxHandle, TenantClient, TenantCreds


@pytest.fixture(scope="session")
def st_definitions() -> None:
    """ServiceTitan's definitions, loaded once up front (the first validated exchange would wait ~2 s)."""
    get_definitions().load()


@pytest.fixture()
def st_transport(st_definitions: None) -> Iterator[ValidatingTransport]:
    """Async transport validating every exchange; fails the test at teardown on any violation."""
    transport = ValidatingTransport(httpx.AsyncHTTPTransport())
    yield transport
    transport.assert_clean()


@pytest.fixture()
def st_sync_transport(st_definitions: None) -> Iterator[SyncValidatingTransport]:
    transport = SyncValidatingTransport(httpx.HTTPTransport())
    yield transport
    transport.assert_clean()


@pytest.fixture()
def st_client(sandbox: SandboxHandle, st_sync_transport: SyncValidatingTransport) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, transport=st_sync_transport, timeout=10) as client:
        yield client


@pytest.fixture()
def demo_tenant(sandbox: SandboxHandle) -> TenantCreds:
    return TenantCreds.demo(0)


@pytest.fixture()
def fresh_tenant(sandbox: SandboxHandle) -> Callable[..., TenantCreds]:
    """`fresh_tenant(rate=5, burst=5, ...)` creates a new runtime tenant (generated credentials unless given)."""
    return sandbox.create_tenant


@pytest.fixture()
def st(st_client: httpx.Client, demo_tenant: TenantCreds) -> TenantClient:
    """The first demo tenant, authenticated, through the validating transport."""
    return TenantClient(st_client, demo_tenant)
