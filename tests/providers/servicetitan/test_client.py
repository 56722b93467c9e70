"""The ServiceTitan client over real HTTP against the sandbox, every exchange validated against the definitions.

Auth (caching, refresh, single flight, 401 retry), throttling, every fault kind → the right error class, paging.
Only the clock is faked (token expiry); everything else is the real client talking to the real sandbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from integration_core.local.demo import DEMO_TENANTS
from integration_core.providers.base import (
    AuthFailed,
    Permanent,
    ProviderError,
    RateLimited,
    Retryable,
    UnknownOutcome,
)
from integration_core.providers.servicetitan import mapping
from integration_core.providers.servicetitan.auth import TokenCache
from integration_core.providers.servicetitan.client import ServiceTitanClient
from sandboxes.servicetitan.spec import ValidatingTransport
from tests.support.sandbox import SandboxHandle, TenantCreds
from tests.support.servicetitan import assert_safe, connection, delivery_request

pytestmark = pytest.mark.anyio

BOOKINGS_ROUTE = "/crm/v2/tenant/{tenant}/booking-provider/{booking_provider}/bookings"
BUSINESS_UNITS_ROUTE = "GET /settings/v2/tenant/{tenant}/business-units"

MakeClient = Callable[..., ServiceTitanClient]


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture()
def cache() -> TokenCache:
    """A token cache of the test's own (the process-wide one would carry tokens across tests)."""
    return TokenCache()


@pytest.fixture()
async def http(st_transport: ValidatingTransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=st_transport) as client:
        yield client


@pytest.fixture()
def make_client(sandbox: SandboxHandle, http: httpx.AsyncClient, cache: TokenCache) -> MakeClient:
    """Clients on the sandbox sharing one validated HTTP client and the test's token cache."""

    def make(creds: TenantCreds, **kwargs: Any) -> ServiceTitanClient:
        config = kwargs.pop("config", None) or connection(creds, sandbox.url)
        kwargs.setdefault("token_cache", cache)
        return ServiceTitanClient(config, http_client=http, **kwargs)

    return make


def requests_to(handle: SandboxHandle, creds: TenantCreds, route: str) -> dict[str, int]:
    counts: dict[str, int] = handle.inspect(creds.tenant_id)["requests"].get(route, {})
    return counts


# -- tokens ------------------------------------------------------------------------------------------------------


async def test_token_is_cached_and_reused_across_clients(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle, cache: TokenCache
) -> None:
    client = make_client(demo_tenant)
    await client.first_business_unit_page()
    await client.first_business_unit_page()
    await make_client(demo_tenant).first_business_unit_page()  # another client in the process

    assert cache.fetches == 1
    assert sandbox.inspect(demo_tenant.tenant_id)["tokens_issued"] == 1
    assert requests_to(sandbox, demo_tenant, BUSINESS_UNITS_ROUTE) == {"200": 3}


async def test_token_is_refreshed_shortly_before_it_expires(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle, cache: TokenCache
) -> None:
    clock = FakeClock()
    client = make_client(demo_tenant, clock=clock)
    first = await client.token()
    assert first.expires_at - first.obtained_at == 900  # ServiceTitan's lifetime

    clock.now += 900 - 60 - 1  # 61 s left: still used
    assert await client.token() == first
    await client.first_business_unit_page()
    assert cache.fetches == 1

    clock.now += 2  # 59 s left: inside the 60 s refresh margin
    await client.first_business_unit_page()
    assert cache.fetches == 2
    assert (await client.token()).value != first.value
    inspect = sandbox.inspect(demo_tenant.tenant_id)
    assert inspect["tokens_issued"] == 2
    assert "401" not in inspect["requests_by_status"]  # refreshed before, never after, expiry


async def test_short_lived_sandbox_tokens_are_refreshed_on_the_real_clock(
    make_client: MakeClient, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle, cache: TokenCache
) -> None:
    creds = fresh_tenant(token_lifetime_s=6)  # refreshed once 3 s (half the lifetime) are left
    client = make_client(creds)
    await client.first_business_unit_page()
    await client.first_business_unit_page()
    assert cache.fetches == 1  # the margin is capped at half the lifetime, so the token is reused

    await asyncio.sleep(3.1)
    await client.first_business_unit_page()
    assert cache.fetches == 2
    inspect = sandbox.inspect(creds.tenant_id)
    assert inspect["tokens_issued"] == 2
    assert "401" not in inspect["requests_by_status"]


async def test_fifty_concurrent_calls_make_a_single_token_request(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle, cache: TokenCache
) -> None:
    client = make_client(demo_tenant)
    pages = await asyncio.gather(*(client.first_business_unit_page() for _ in range(50)))

    assert len(pages) == 50 and all(page.data for page in pages)
    assert cache.fetches == 1
    assert sandbox.inspect(demo_tenant.tenant_id)["tokens_issued"] == 1


async def test_revoked_token_is_refreshed_once_and_the_call_succeeds(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle, cache: TokenCache
) -> None:
    client = make_client(demo_tenant)
    await client.first_business_unit_page()
    sandbox.revoke_tokens(demo_tenant.tenant_id)

    # 20 concurrent calls all see the 401; the token is refreshed once and every call succeeds.
    pages = await asyncio.gather(*(client.first_business_unit_page() for _ in range(20)))

    assert all(page.data for page in pages)
    assert cache.fetches == 2
    counts = requests_to(sandbox, demo_tenant, BUSINESS_UNITS_ROUTE)
    assert counts["200"] == 21
    assert 1 <= counts["401"] <= 20


async def test_a_second_401_is_auth_failed_after_exactly_one_refresh(
    make_client: MakeClient,
    fresh_tenant: Callable[..., TenantCreds],
    sandbox: SandboxHandle,
    cache: TokenCache,
) -> None:
    creds = fresh_tenant(token_lifetime_s=0.0001)  # every token is expired by the time it is used
    client = make_client(creds)

    with pytest.raises(AuthFailed) as info:
        await client.first_business_unit_page()

    assert (info.value.code, info.value.http_status) == ("unauthorized", 401)
    assert cache.fetches == 2  # the first token, and one refresh
    assert requests_to(sandbox, creds, BUSINESS_UNITS_ROUTE) == {"401": 2}
    assert_safe(info.value, config=client.config)


async def test_bad_credentials_are_auth_failed(
    make_client: MakeClient, sandbox: SandboxHandle, demo_tenant: TenantCreds
) -> None:
    config = connection(demo_tenant, sandbox.url, client_secret="cs1.wrong-secret-value")
    with pytest.raises(AuthFailed) as info:
        await make_client(demo_tenant, config=config).first_business_unit_page()

    assert info.value.code == "invalid_client"
    assert info.value.http_status == 400
    assert requests_to(sandbox, demo_tenant, BUSINESS_UNITS_ROUTE) == {}  # never got as far
    assert_safe(info.value, config=config)


async def test_a_token_for_another_tenant_is_rejected(
    make_client: MakeClient, sandbox: SandboxHandle, demo_tenant: TenantCreds
) -> None:
    other_tenant = DEMO_TENANTS[1].tenant_id
    config = connection(demo_tenant, sandbox.url, tenant_id=other_tenant)  # tenant A's credentials, tenant B's URL
    with pytest.raises(AuthFailed) as info:
        await make_client(demo_tenant, config=config).first_business_unit_page()

    assert (info.value.code, info.value.http_status) == ("forbidden", 403)
    assert_safe(info.value, config=config)


async def test_token_endpoint_unreachable_is_retryable_even_for_a_write(
    http: httpx.AsyncClient, demo_tenant: TenantCreds, cache: TokenCache
) -> None:
    config = connection(demo_tenant, "http://127.0.0.1:9")  # nothing listens on the discard port
    client = ServiceTitanClient(config, http_client=http, token_cache=cache)
    request = delivery_request()
    with pytest.raises(Retryable) as info:
        await client.create_booking(demo_tenant.booking_provider_id, mapping.booking_body(request, config))

    assert info.value.code == "token_endpoint_unavailable"  # nothing was sent, so never UnknownOutcome
    assert_safe(info.value, config=config, request=request)


# -- throttling --------------------------------------------------------------------------------------------------


async def test_429_is_rate_limited_with_the_servers_retry_after(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    client = make_client(demo_tenant)
    await client.token()
    sandbox.storm(demo_tenant.tenant_id, seconds=30, retry_after=7)

    with pytest.raises(RateLimited) as info:
        await client.first_business_unit_page()

    assert info.value.retry_after == 7.0
    assert info.value.http_status == 429
    assert info.value.trace_id
    assert "Try again in 7 seconds" in info.value.message


async def test_token_bucket_429_on_a_write_is_rate_limited_not_unknown(
    make_client: MakeClient, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    creds = fresh_tenant(rate=0.5, burst=1)
    client = make_client(creds)
    config = client.config
    await client.create_booking(creds.booking_provider_id, mapping.booking_body(delivery_request(), config))

    request = delivery_request()
    with pytest.raises(RateLimited) as info:
        await client.create_booking(creds.booking_provider_id, mapping.booking_body(request, config))

    assert info.value.retry_after == 2.0
    assert sandbox.inspect(creds.tenant_id)["records"]["bookings"] == 1
    assert_safe(info.value, config=config, request=request)


# -- faults ------------------------------------------------------------------------------------------------------


async def test_5xx_on_a_write_is_unknown_outcome(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    client = make_client(demo_tenant)
    sandbox.put_faults(demo_tenant.tenant_id, error_rate=1.0, error_statuses=[503])
    request = delivery_request()

    with pytest.raises(UnknownOutcome) as info:
        await client.create_booking(
            demo_tenant.booking_provider_id,
            mapping.booking_body(request, client.config),
            sensitive=request.sensitive_values(),
        )

    assert (info.value.code, info.value.http_status) == ("server_error_after_send", 503)
    assert info.value.trace_id
    assert_safe(info.value, config=client.config, request=request)


async def test_5xx_on_a_read_is_retryable(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    client = make_client(demo_tenant)
    sandbox.put_faults(demo_tenant.tenant_id, error_rate=1.0, error_statuses=[500], applies_to="all")

    with pytest.raises(Retryable) as info:
        await client.first_business_unit_page()

    assert (info.value.code, info.value.http_status) == ("server_error", 500)


async def test_timeout_on_a_write_is_unknown_outcome_and_the_write_happened(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    timeout = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
    client = make_client(demo_tenant, timeout=timeout)
    await client.token()
    sandbox.put_faults(demo_tenant.tenant_id, timeout_rate=1.0, timeout_s=1.0, timeout_commits=True)
    request = delivery_request()

    with pytest.raises(UnknownOutcome) as info:
        await client.create_booking(demo_tenant.booking_provider_id, mapping.booking_body(request, client.config))

    assert info.value.code == "timeout"
    assert_safe(info.value, config=client.config, request=request)
    await asyncio.sleep(1.0)  # the sandbox commits while holding the answer
    sandbox.put_faults(demo_tenant.tenant_id)
    found = [b async for b in client.list_bookings(demo_tenant.booking_provider_id, external_id=request.marker)]
    assert [b.external_id for b in found] == [request.marker]


async def test_timeout_on_a_read_is_retryable(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    client = make_client(demo_tenant, timeout=httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0))
    await client.token()
    sandbox.put_faults(demo_tenant.tenant_id, timeout_rate=1.0, timeout_s=1.0, applies_to="all")

    with pytest.raises(Retryable) as info:
        await client.first_business_unit_page()
    assert info.value.code == "timeout"


@pytest.mark.parametrize(("mode", "code"), [("status", "server_error_after_send"), ("drop", "connection_lost")])
async def test_commit_then_fail_is_unknown_outcome_and_the_record_exists(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle, mode: str, code: str
) -> None:
    client = make_client(demo_tenant)
    sandbox.put_faults(demo_tenant.tenant_id, commit_then_fail_rate=1.0, commit_then_fail_mode=mode)
    request = delivery_request()

    with pytest.raises(UnknownOutcome) as info:
        await client.create_booking(demo_tenant.booking_provider_id, mapping.booking_body(request, client.config))

    assert info.value.code == code
    assert_safe(info.value, config=client.config, request=request)
    sandbox.put_faults(demo_tenant.tenant_id)
    found = [b async for b in client.list_bookings(demo_tenant.booking_provider_id, external_id=request.marker)]
    assert len(found) == 1


async def test_a_body_servicetitan_refuses_is_permanent_with_field_errors(
    make_client: MakeClient, sandbox: SandboxHandle, demo_tenant: TenantCreds
) -> None:
    config = connection(demo_tenant, sandbox.url, job_type_id=999_999)
    client = make_client(demo_tenant, config=config)
    request = delivery_request()

    with pytest.raises(Permanent) as info:
        await client.create_booking(
            demo_tenant.booking_provider_id,
            mapping.booking_body(request, config),
            sensitive=request.sensitive_values(),
        )

    error = info.value
    assert (error.code, error.http_status) == ("validation_error", 400)
    assert list(error.field_errors) == ["JobTypeId"]
    assert "999999" in error.field_errors["JobTypeId"][0]
    assert "One or more validation errors occurred." in error.message
    assert error.trace_id
    assert sandbox.inspect(demo_tenant.tenant_id)["records"]["bookings"] == 0
    assert_safe(error, config=config, request=request)


async def test_unknown_customer_on_location_create_is_permanent_conflict(
    make_client: MakeClient, demo_tenant: TenantCreds
) -> None:
    client = make_client(demo_tenant)
    request = delivery_request()
    with pytest.raises(Permanent) as info:
        await client.create_location(
            mapping.location_body(request, customer_id=1), sensitive=request.sensitive_values()
        )
    assert (info.value.code, info.value.http_status) == ("conflict", 409)
    assert "Unknown customer" in info.value.message


# -- reads and paging --------------------------------------------------------------------------------------------


async def test_paging_walks_every_page(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    client = make_client(demo_tenant)
    created = []
    for _ in range(7):
        booking = await client.create_booking(
            demo_tenant.booking_provider_id, mapping.booking_body(delivery_request(), client.config)
        )
        created.append(booking.id)

    listed = [b.id async for b in client.list_bookings(demo_tenant.booking_provider_id, page_size=3)]

    assert listed == sorted(created)
    assert requests_to(sandbox, demo_tenant, f"GET {BOOKINGS_ROUTE}") == {"200": 3}


async def test_ids_beyond_fifty_are_sent_in_chunks(
    make_client: MakeClient, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    client = make_client(demo_tenant)
    booking = await client.create_booking(
        demo_tenant.booking_provider_id, mapping.booking_body(delivery_request(), client.config)
    )
    ids = [booking.id, *range(1, 60)]

    found = [b.id async for b in client.list_bookings(demo_tenant.booking_provider_id, ids=ids)]

    assert found == [booking.id]
    assert requests_to(sandbox, demo_tenant, f"GET {BOOKINGS_ROUTE}") == {"200": 2}  # 50 + 10, no 400


async def test_get_of_a_missing_record_is_none(make_client: MakeClient, demo_tenant: TenantCreds) -> None:
    client = make_client(demo_tenant)
    assert await client.get_booking(demo_tenant.booking_provider_id, 1) is None
    assert await client.get_job(1) is None


async def test_jobs_carry_and_are_found_by_their_external_data(
    make_client: MakeClient, sandbox: SandboxHandle, demo_tenant: TenantCreds
) -> None:
    config = connection(demo_tenant, sandbox.url, mode="job")
    client = make_client(demo_tenant, config=config)
    request = delivery_request()
    customer = await client.create_customer(mapping.customer_body(request))
    job = await client.create_job(
        mapping.job_body(
            request,
            config,
            customer_id=customer.id,
            location_id=customer.locations[0].id,
            now=request.created_at,
        )
    )
    guid = demo_tenant.external_data_guid

    assert job.external_value(mapping.MARKER_KEY) == request.marker
    fetched = await client.get_job(job.id, external_data_guid=guid)
    assert fetched is not None and fetched.external_value(mapping.MARKER_KEY) == request.marker
    found = [
        j.id
        async for j in client.list_jobs(
            external_data_guid=guid, external_data_key=mapping.MARKER_KEY, external_data_values=[request.marker]
        )
    ]
    assert found == [job.id]

    sandbox.advance_job(demo_tenant.tenant_id, job.id, "Completed", invoice_total="1234.50")
    invoices = [i async for i in client.list_invoices(job_id=job.id)]
    assert [i.total for i in invoices] == [Decimal("1234.50")]
    assert mapping.revenue_from_invoices(invoices) == Decimal("1234.50")


async def test_lookups(make_client: MakeClient, demo_tenant: TenantCreds) -> None:
    client = make_client(demo_tenant)
    units = [u.id async for u in client.list_business_units(ids=[demo_tenant.business_unit_id])]
    types = [t.id async for t in client.list_job_types(ids=[demo_tenant.job_type_id])]
    campaigns = [c.id async for c in client.list_campaigns(ids=[demo_tenant.campaign_id])]
    assert (units, types, campaigns) == (
        [demo_tenant.business_unit_id],
        [demo_tenant.job_type_id],
        [demo_tenant.campaign_id],
    )


async def test_client_reprs_hide_secrets(make_client: MakeClient, demo_tenant: TenantCreds) -> None:
    client = make_client(demo_tenant)
    token = await client.token()
    for text in (repr(client), repr(client._auth), repr(client.config), repr(token)):
        for secret in (demo_tenant.client_secret, demo_tenant.app_key, token.value):
            assert secret not in text


def test_every_error_class_is_a_provider_error() -> None:
    for cls in (RateLimited, Retryable, AuthFailed, Permanent, UnknownOutcome):
        assert issubclass(cls, ProviderError)
