"""ServiceTitanProvider against the sandbox: exactly one record per routing, lookup by marker, updates, health.

Record counts come from the sandbox's inspection endpoint; every exchange is validated against the definitions.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from integration_core.providers.base import (
    AuthFailed,
    DeliveryRequest,
    Permanent,
    Provider,
    UnknownOutcome,
)
from integration_core.providers.servicetitan import mapping
from integration_core.providers.servicetitan.auth import TokenCache
from integration_core.providers.servicetitan.provider import ServiceTitanProvider
from sandboxes.servicetitan.spec import ValidatingTransport
from tests.support.sandbox import SandboxHandle, TenantCreds
from tests.support.servicetitan import (
    assert_safe,
    connection,
    delivery_request,
    unique_homeowner,
)

pytestmark = pytest.mark.anyio

MakeProvider = Callable[..., ServiceTitanProvider]


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture()
async def http(st_transport: ValidatingTransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=st_transport) as client:
        yield client


@pytest.fixture()
def make_provider(sandbox: SandboxHandle, http: httpx.AsyncClient) -> MakeProvider:
    cache = TokenCache()

    def make(creds: TenantCreds, mode: str = "booking", **overrides: Any) -> ServiceTitanProvider:
        lookback = overrides.pop("updates_lookback", timedelta(minutes=5))
        config = connection(creds, sandbox.url, mode=mode, **overrides)
        return ServiceTitanProvider(config, http_client=http, token_cache=cache, updates_lookback=lookback)

    return make


def records(handle: SandboxHandle, creds: TenantCreds) -> dict[str, int]:
    counts: dict[str, int] = handle.inspect(creds.tenant_id)["records"]
    return counts


def markers(handle: SandboxHandle, creds: TenantCreds) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = handle.inspect(creds.tenant_id)["markers"]
    return found


def job_marker(request: DeliveryRequest) -> str:
    return f"{mapping.MARKER_KEY}={request.marker}"


def seed_failing_nth_write(n: int, rate: float = 0.5) -> int:
    """A fault seed whose first ``n - 1`` writes pass and whose ``n``-th fails (the sandbox draws one uniform
    number per write from ``random.Random(seed)``)."""
    for seed in range(10_000):
        rng = random.Random(seed)
        draws = [rng.random() for _ in range(n)]
        if all(u >= rate for u in draws[:-1]) and draws[-1] < rate:
            return seed
    raise AssertionError("no seed found")


async def test_the_provider_satisfies_the_protocol(make_provider: MakeProvider, demo_tenant: TenantCreds) -> None:
    booking, job = make_provider(demo_tenant), make_provider(demo_tenant, "job")
    assert isinstance(booking, Provider)
    assert (booking.capabilities.work_item_kind, job.capabilities.work_item_kind) == ("booking", "job")
    assert booking.capabilities.rate_per_second == 60.0
    assert booking.capabilities.auth_kind == "oauth2_client_credentials"
    assert booking.capabilities.supports_lookup


# -- booking mode ------------------------------------------------------------------------------------------------


async def test_booking_mode_creates_exactly_one_booking_and_finds_it_again(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant)
    request = delivery_request()
    assert await provider.find_existing(request) is None

    result = await provider.deliver(request)

    assert result.kind == "booking" and not result.adopted
    assert result.refs == {
        "booking_id": int(result.external_id),
        "booking_provider_id": demo_tenant.booking_provider_id,
    }
    assert markers(sandbox, demo_tenant)["bookings"] == {request.marker: 1}
    assert records(sandbox, demo_tenant)["bookings"] == 1

    found = await provider.find_existing(request)
    assert found is not None and found.adopted
    assert found.external_id == result.external_id
    assert await provider.find_existing(delivery_request()) is None  # another routing's marker


async def test_booking_commit_then_fail_is_unknown_then_found_by_marker(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant)
    request = delivery_request()
    sandbox.put_faults(demo_tenant.tenant_id, commit_then_fail_rate=1.0)

    with pytest.raises(UnknownOutcome) as info:
        await provider.deliver(request)
    assert_safe(info.value, config=provider.config, request=request)

    sandbox.put_faults(demo_tenant.tenant_id)
    found = await provider.find_existing(request)
    assert found is not None and found.adopted
    assert markers(sandbox, demo_tenant)["bookings"] == {request.marker: 1}


async def test_booking_5xx_without_commit_is_unknown_then_absent_then_delivered_once(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant)
    request = delivery_request()
    sandbox.put_faults(demo_tenant.tenant_id, error_rate=1.0, error_statuses=[502])
    with pytest.raises(UnknownOutcome):
        await provider.deliver(request)
    sandbox.put_faults(demo_tenant.tenant_id)

    assert await provider.find_existing(request) is None
    await provider.deliver(request)
    assert markers(sandbox, demo_tenant)["bookings"] == {request.marker: 1}


async def test_a_refused_booking_is_permanent_and_safe(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant, campaign_id=424_242)
    request = delivery_request()
    with pytest.raises(Permanent) as info:
        await provider.deliver(request)

    assert info.value.field_errors.keys() == {"CampaignId"}
    assert records(sandbox, demo_tenant)["bookings"] == 0
    assert_safe(info.value, config=provider.config, request=request)


# -- job mode ----------------------------------------------------------------------------------------------------


async def test_job_mode_creates_customer_location_and_one_job_with_the_marker(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant, "job")
    request = delivery_request(**unique_homeowner())
    assert await provider.find_existing(request) is None

    result = await provider.deliver(request)

    assert result.kind == "job" and not result.adopted
    assert set(result.refs) == {"customer_id", "location_id", "job_id", "job_number"}
    assert result.external_id == str(result.refs["job_id"])
    assert records(sandbox, demo_tenant) | {"invoices": 0} == {
        "bookings": 0,
        "customers": 1,
        "locations": 1,
        "jobs": 1,
        "invoices": 0,
    }
    assert markers(sandbox, demo_tenant)["jobs"] == {job_marker(request): 1}

    found = await provider.find_existing(request)
    assert found is not None and found.adopted
    assert (found.external_id, found.refs) == (result.external_id, result.refs)


async def test_job_mode_reuses_a_customer_found_by_phone(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant, "job")
    homeowner = unique_homeowner()
    # The tenant already knows this homeowner under another name and address, with the phone formatted otherwise.
    existing_request = delivery_request(
        **{**homeowner, "homeowner_name": "J. Homeowner", "street": "9 Other Road", "homeowner_email": None}
    )
    existing = await provider.client.create_customer(mapping.customer_body(existing_request))

    result = await provider.deliver(delivery_request(**homeowner))

    assert result.refs["customer_id"] == existing.id
    assert result.refs["location_id"] != existing.locations[0].id  # a new service address for that customer
    assert records(sandbox, demo_tenant)["customers"] == 1
    assert records(sandbox, demo_tenant)["locations"] == 2


async def test_job_mode_reuses_customer_and_location_by_name_and_address(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant, "job")
    homeowner = {**unique_homeowner(), "homeowner_phone": None, "homeowner_email": None}
    existing = await provider.client.create_customer(mapping.customer_body(delivery_request(**homeowner)))

    result = await provider.deliver(delivery_request(**homeowner, unit=None))

    assert (result.refs["customer_id"], result.refs["location_id"]) == (existing.id, existing.locations[0].id)
    assert records(sandbox, demo_tenant) | {"jobs": 1} == {
        "bookings": 0,
        "customers": 1,
        "locations": 1,
        "jobs": 1,
        "invoices": 0,
    }


async def test_job_mode_reuses_a_customer_found_by_name_and_email_at_another_address(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    """No phone and a new service address: the name narrows the candidates and the customer's listed contacts
    (GET /customers/{id}/contacts) hold the homeowner's e-mail, so it is the same customer."""
    provider = make_provider(demo_tenant, "job")
    homeowner = {**unique_homeowner(), "homeowner_phone": None}
    existing = await provider.client.create_customer(
        mapping.customer_body(delivery_request(**{**homeowner, "street": "9 Other Road"}))
    )

    result = await provider.deliver(delivery_request(**homeowner))
    assert result.refs["customer_id"] == existing.id
    assert records(sandbox, demo_tenant)["customers"] == 1

    stranger = {**homeowner, "homeowner_email": "someone.else@example.com", "street": "5 Third Street"}
    other = await provider.deliver(delivery_request(**stranger))
    assert other.refs["customer_id"] != existing.id  # same name, another e-mail and address: not the same person
    assert records(sandbox, demo_tenant)["customers"] == 2


async def test_job_mode_does_not_reuse_a_different_homeowner(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant, "job")
    first = await provider.deliver(delivery_request(**unique_homeowner()))
    second = await provider.deliver(delivery_request(**unique_homeowner()))

    assert first.refs["customer_id"] != second.refs["customer_id"]
    assert records(sandbox, demo_tenant)["customers"] == 2


async def test_job_mode_retry_after_a_failure_between_steps_creates_no_second_customer(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant, "job")
    request = delivery_request(**unique_homeowner())
    # The customer POST (write 1) goes through; the job POST (write 2) fails with a 500, nothing committed.
    seed = seed_failing_nth_write(2)
    sandbox.put_faults(demo_tenant.tenant_id, seed=seed, error_rate=0.5, error_statuses=[500])

    with pytest.raises(UnknownOutcome) as info:
        await provider.deliver(request)
    assert_safe(info.value, config=provider.config, request=request)
    assert records(sandbox, demo_tenant)["customers"] == 1
    assert records(sandbox, demo_tenant)["jobs"] == 0

    sandbox.put_faults(demo_tenant.tenant_id)
    assert await provider.find_existing(request) is None  # reconcile: absent, so deliver again
    result = await provider.deliver(request)

    counts = records(sandbox, demo_tenant)
    assert (counts["customers"], counts["locations"], counts["jobs"]) == (1, 1, 1)
    assert markers(sandbox, demo_tenant)["jobs"] == {job_marker(request): 1}
    assert result.refs["job_id"] == int(result.external_id)


async def test_job_mode_commit_then_fail_on_the_job_is_found_and_adopted(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant, "job")
    request = delivery_request(**unique_homeowner())
    seed = seed_failing_nth_write(2)
    sandbox.put_faults(demo_tenant.tenant_id, seed=seed, commit_then_fail_rate=0.5)

    with pytest.raises(UnknownOutcome):
        await provider.deliver(request)

    sandbox.put_faults(demo_tenant.tenant_id)
    found = await provider.find_existing(request)
    assert found is not None and found.adopted
    counts = records(sandbox, demo_tenant)
    assert (counts["customers"], counts["locations"], counts["jobs"]) == (1, 1, 1)
    assert markers(sandbox, demo_tenant)["jobs"] == {job_marker(request): 1}


async def test_job_mode_needs_its_settings(make_provider: MakeProvider, demo_tenant: TenantCreds) -> None:
    provider = make_provider(demo_tenant, "job", external_data_guid=None)
    with pytest.raises(Permanent) as info:
        await provider.deliver(delivery_request())
    assert info.value.code == "misconfigured"
    assert info.value.field_errors == {"external_data_guid": ["required for delivery_mode=job"]}


# -- fetch_updates -----------------------------------------------------------------------------------------------


async def test_booking_updates_follow_a_converted_booking_to_its_job_and_revenue(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant)
    since = datetime.now(UTC) - timedelta(seconds=1)
    converted_request, dismissed_request = delivery_request(), delivery_request()
    converted = await provider.deliver(converted_request)
    dismissed = await provider.deliver(dismissed_request)
    tenant = demo_tenant.tenant_id
    sandbox.advance_booking(tenant, int(converted.external_id), "Accepted")
    job_id = sandbox.advance_booking(tenant, int(converted.external_id), "Converted")["job"]["id"]
    sandbox.advance_job(tenant, job_id, "Dispatched")
    sandbox.advance_job(tenant, job_id, "Completed", invoice_total="880.40")
    sandbox.advance_booking(tenant, int(dismissed.external_id), "Dismissed")

    batch = await provider.fetch_updates(since)

    by_source = {(u.external_id, u.read_from): u for u in batch.updates}
    assert set(by_source) == {
        (converted.external_id, "booking"),
        (dismissed.external_id, "booking"),
        (converted.external_id, "job"),
    }
    booking_update = by_source[(converted.external_id, "booking")]
    assert (booking_update.kind, booking_update.external_status) == ("booking", "converted")
    assert booking_update.marker == converted_request.routing_id
    assert booking_update.refs["job_id"] == job_id
    assert by_source[(dismissed.external_id, "booking")].external_status == "dismissed"
    assert by_source[(dismissed.external_id, "booking")].is_final

    job_update = by_source[(converted.external_id, "job")]
    assert job_update.kind == "booking"  # the routing delivered a booking
    assert job_update.marker == converted_request.routing_id
    assert job_update.external_status == "completed"
    assert job_update.revenue == Decimal("880.40")
    assert job_update.completed_at is not None and job_update.completed_at > since
    assert job_update.refs["job_id"] == job_id
    # booking updates first, so the job's status is applied last
    assert batch.updates.index(job_update) > batch.updates.index(booking_update)
    assert batch.cursor == max(u.modified_on for u in batch.updates)


async def test_job_updates_report_status_completion_and_revenue(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    provider = make_provider(demo_tenant, "job")
    since = datetime.now(UTC) - timedelta(seconds=1)
    request = delivery_request(**unique_homeowner())
    delivered = await provider.deliver(request)
    # a job nobody routed (no marker) is not reported
    other = await provider.client.create_customer(mapping.customer_body(delivery_request(**unique_homeowner())))
    unmarked = mapping.job_body(
        request, provider.config, customer_id=other.id, location_id=other.locations[0].id, now=datetime.now(UTC)
    ).model_copy(update={"external_data": None})
    await provider.client.create_job(unmarked)

    first = await provider.fetch_updates(since)
    assert [(u.kind, u.external_id, u.external_status, u.marker) for u in first.updates] == [
        ("job", delivered.external_id, "scheduled", request.routing_id)
    ]

    sandbox.advance_job(demo_tenant.tenant_id, int(delivered.external_id), "Completed", invoice_total=99.5)
    second = await provider.fetch_updates(first.cursor)
    assert len(second.updates) == 1
    update = second.updates[0]
    assert (update.external_status, update.revenue, update.is_final) == ("completed", Decimal("99.50"), True)
    assert update.completed_at is not None
    assert second.cursor > first.cursor


async def test_an_invoice_edited_after_completion_moves_the_revenue(
    make_provider: MakeProvider, demo_tenant: TenantCreds, sandbox: SandboxHandle
) -> None:
    """The back office corrects an invoice after the job completed; the job's modifiedOn does not move, the
    invoice's does: the next pull reads that job again and reports the new revenue (job mode and a booking
    converted to a job alike)."""
    tenant = demo_tenant.tenant_id
    job_mode = make_provider(demo_tenant, "job")
    booking_mode = make_provider(demo_tenant, updates_lookback=timedelta(0))  # no overlap hides the edit
    since = datetime.now(UTC) - timedelta(seconds=1)
    as_job = await job_mode.deliver(delivery_request(**unique_homeowner()))
    as_booking = await booking_mode.deliver(delivery_request())
    invoice_of_job = sandbox.advance_job(tenant, int(as_job.external_id), "Completed", invoice_total=500)
    sandbox.advance_booking(tenant, int(as_booking.external_id), "Accepted")
    converted = sandbox.advance_booking(tenant, int(as_booking.external_id), "Converted")["job"]["id"]
    invoice_of_booking = sandbox.advance_job(tenant, converted, "Completed", invoice_total=300)

    first = await booking_mode.fetch_updates(since)
    revenue = {(u.external_id, u.read_from): u.revenue for u in first.updates}
    assert revenue[(as_job.external_id, "job")] == Decimal("500.00")
    assert revenue[(as_booking.external_id, "job")] == Decimal("300.00")

    await asyncio.sleep(0.01)  # the edits come strictly after the first pull's cursor
    sandbox.adjust_invoice(tenant, invoice_of_job["invoice"]["id"], "612.25")
    sandbox.adjust_invoice(tenant, invoice_of_booking["invoice"]["id"], 333)
    second = await booking_mode.fetch_updates(first.cursor + timedelta(microseconds=1))

    revenue = {(u.external_id, u.read_from): u.revenue for u in second.updates if u.revenue is not None}
    assert revenue == {
        (as_job.external_id, "job"): Decimal("612.25"),
        (as_booking.external_id, "job"): Decimal("333.00"),
    }
    assert second.cursor > first.cursor


async def test_the_cursor_only_moves_forward_and_old_changes_are_not_repeated(
    make_provider: MakeProvider, demo_tenant: TenantCreds
) -> None:
    provider = make_provider(demo_tenant, updates_lookback=timedelta(0))
    since = datetime.now(UTC) - timedelta(seconds=1)
    early = await provider.deliver(delivery_request())
    late = await provider.deliver(delivery_request())

    first = await provider.fetch_updates(since)
    assert {u.external_id for u in first.updates} == {early.external_id, late.external_id}

    second = await provider.fetch_updates(first.cursor)
    # `modifiedOnOrAfter` is inclusive: the latest record may be seen again, older ones are not
    assert {u.external_id for u in second.updates} <= {late.external_id}
    assert second.cursor == first.cursor

    quiet = await provider.fetch_updates(datetime.now(UTC) + timedelta(hours=1))
    assert quiet.updates == [] and quiet.cursor > first.cursor


# -- check_connection --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["booking", "job"])
async def test_check_connection_passes_for_a_good_connection(
    make_provider: MakeProvider, demo_tenant: TenantCreds, mode: str
) -> None:
    await make_provider(demo_tenant, mode).check_connection()


async def test_check_connection_reports_missing_and_unknown_settings(
    make_provider: MakeProvider, demo_tenant: TenantCreds
) -> None:
    with pytest.raises(Permanent) as missing:
        await make_provider(demo_tenant, booking_provider_id=None).check_connection()
    assert missing.value.code == "misconfigured"
    assert "booking_provider_id" in missing.value.field_errors

    with pytest.raises(Permanent) as unknown:
        await make_provider(demo_tenant, "job", campaign_id=31_337, job_type_id=31_338).check_connection()
    assert unknown.value.code == "misconfigured"
    assert set(unknown.value.field_errors) == {"campaign_id", "job_type_id"}


async def test_check_connection_with_bad_credentials_is_auth_failed(
    make_provider: MakeProvider, demo_tenant: TenantCreds
) -> None:
    provider = make_provider(demo_tenant, client_secret="cs1.not-the-secret")
    with pytest.raises(AuthFailed) as info:
        await provider.check_connection()
    assert_safe(info.value, config=provider.config)


async def test_check_connection_with_a_wrong_booking_provider_is_permanent(
    make_provider: MakeProvider, demo_tenant: TenantCreds
) -> None:
    with pytest.raises(Permanent) as info:
        await make_provider(demo_tenant, booking_provider_id=999_999).check_connection()
    assert info.value.http_status == 400
