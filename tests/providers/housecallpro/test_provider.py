"""The Housecall Pro provider against the real sandbox over loopback; every exchange is validated against
`housecall.v1.yaml` (a violation fails the test)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest

from integration_core.providers.base import AuthFailed, Permanent, RateLimited, Retryable, UnknownOutcome
from integration_core.providers.housecallpro import mapping
from tests.support.housecallpro import HcpAccount, HcpSandbox
from tests.support.housecallpro_client import (
    assert_safe,
    connection,
    delivery_request,
    unique_homeowner,
    validating_provider,
)

E = TypeVar("E", bound=Exception)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- auth ---------------------------------------------------------------------------------------------------


def test_wrong_key_is_auth_failed_without_leaking_it(hcp: HcpSandbox) -> None:
    account = hcp.create_account()
    bad = connection(account, hcp.url, api_key="hcpk_not-the-right-key-0000")
    request = delivery_request()

    async def body() -> None:
        async with validating_provider(bad) as provider:
            with pytest.raises(AuthFailed) as check:
                await provider.check_connection()
            with pytest.raises(AuthFailed) as deliver:
                await provider.deliver(request)
        for exc in (check.value, deliver.value):
            assert exc.http_status == 401
            assert_safe(exc, config=bad, request=request)

    run(body())
    assert hcp.inspect(account.company_id)["records"]["leads"] == 0


def test_check_connection_proves_key_and_company(hcp: HcpSandbox) -> None:
    account, other = hcp.create_account(), hcp.create_account()

    async def body() -> None:
        async with validating_provider(connection(account, hcp.url)) as provider:
            await provider.check_connection()
            await provider.deliver(delivery_request(**unique_homeowner()))  # a lead that names its company
            await provider.check_connection()
        wrong = connection(account, hcp.url, company_id=other.company_id)
        async with validating_provider(wrong) as provider:
            with pytest.raises(Permanent) as exc:
                await provider.check_connection()
        assert exc.value.code == "misconfigured" and "company_id" in exc.value.field_errors

    run(body())


# -- delivery modes and lookup ------------------------------------------------------------------------------


def test_lead_mode_delivers_once_and_finds_it_by_marker(hcp: HcpSandbox) -> None:
    account = hcp.create_account()
    config = connection(account, hcp.url, mode="lead")
    request = delivery_request(**unique_homeowner())

    async def body() -> None:
        async with validating_provider(config) as provider:
            assert await provider.find_existing(request) is None
            created = await provider.deliver(request)
            found = await provider.find_existing(request)
            assert created.kind == "lead" and not created.adopted
            assert found is not None and found.adopted
            assert (found.external_id, found.refs["customer_id"]) == (created.external_id, created.refs["customer_id"])
            # another referral for the same homeowner: the customer and address are reused, a second lead made
            again = delivery_request(
                **{k: getattr(request, k) for k in ("homeowner_name", "homeowner_phone", "street")}
            )
            second = await provider.deliver(again)
            assert second.refs["customer_id"] == created.refs["customer_id"]
            assert second.refs["address_id"] == created.refs["address_id"]
            assert second.external_id != created.external_id

    run(body())
    info = hcp.inspect(account.company_id)
    assert info["records"] == {"customers": 1, "addresses": 1, "leads": 2, "jobs": 0, "invoices": 0}
    assert info["markers"]["leads"][str(request.routing_id)]["tags"] == 1
    assert not any(info["duplicates"].values())


def test_job_mode_creates_unscheduled_job_and_new_address_for_other_street(hcp: HcpSandbox) -> None:
    account = hcp.create_account()
    config = connection(account, hcp.url, mode="job")
    homeowner = unique_homeowner()
    first = delivery_request(**homeowner)
    second = delivery_request(**{**homeowner, "street": "1 Other Road", "unit": "Unit 4"})

    async def body() -> None:
        async with validating_provider(config) as provider:
            a = await provider.deliver(first)
            b = await provider.deliver(second)
            assert a.kind == b.kind == "job"
            assert a.refs["customer_id"] == b.refs["customer_id"]  # found again by phone
            assert a.refs["address_id"] != b.refs["address_id"]
            found = await provider.find_existing(second)
            assert found is not None and found.external_id == b.external_id and found.adopted

    run(body())
    info = hcp.inspect(account.company_id)
    assert info["records"]["customers"] == 1 and info["records"]["addresses"] == 2
    assert info["jobs_by_status"] == {"needs scheduling": 2}


def test_customer_matched_by_email_then_by_name_and_address(hcp: HcpSandbox) -> None:
    account = hcp.create_account()
    config = connection(account, hcp.url)
    homeowner = unique_homeowner()
    first = delivery_request(**homeowner)
    by_email = delivery_request(**{**homeowner, "homeowner_phone": "(999) 555-0000"})
    by_name = delivery_request(**{**homeowner, "homeowner_phone": None, "homeowner_email": None})
    stranger = delivery_request(**{**homeowner, "homeowner_phone": None, "homeowner_email": None, "street": "9 X St"})

    async def body() -> list[str]:
        async with validating_provider(config) as provider:
            return [str((await provider.deliver(r)).refs["customer_id"]) for r in (first, by_email, by_name, stranger)]

    ids = run(body())
    assert ids[0] == ids[1] == ids[2] and ids[3] != ids[0]  # same name elsewhere is not the same homeowner


def test_lookup_scans_when_the_homeowner_changed_at_the_provider(hcp: HcpSandbox) -> None:
    """A lead whose customer no longer matches (the office fixed the phone and e-mail) is still found by the
    bounded scan of our leads; same for a job by the scan of recent jobs."""
    account = hcp.create_account()
    homeowner = unique_homeowner()

    async def body() -> None:
        for mode in ("lead", "job"):
            request = delivery_request(**homeowner)
            async with validating_provider(connection(account, hcp.url, mode=mode)) as provider:
                created = await provider.deliver(request)
                changed = delivery_request(
                    routing_id=request.routing_id,
                    created_at=request.created_at,
                    homeowner_name="Someone Else",
                    homeowner_phone="(111) 222-3333",
                    homeowner_email="other@example.com",
                )
                found = await provider.find_existing(changed)
                assert found is not None and found.external_id == created.external_id

    run(body())


# -- error classification through sandbox faults -------------------------------------------------------------


def _deliver_expecting(hcp: HcpSandbox, account: HcpAccount, mode: str, error: type[E], **faults: Any) -> E:
    """Deliver one referral under `faults`; the provider must raise `error` (safe to show)."""
    hcp.put_faults(account.company_id, seed=1, **faults)
    request = delivery_request(**unique_homeowner())

    async def body() -> E:
        config = connection(account, hcp.url, mode=mode)
        async with validating_provider(config, timeout=httpx.Timeout(1.0)) as provider:
            with pytest.raises(error) as exc:
                await provider.deliver(request)
        assert_safe(exc.value, config=config, request=request)
        return exc.value

    try:
        result: E = run(body())
        return result
    finally:
        hcp.clear_faults(account.company_id)


@pytest.fixture()
def faulty(hcp: HcpSandbox) -> HcpAccount:
    return hcp.create_account()


def test_5xx_on_a_read_is_retryable(hcp: HcpSandbox, faulty: HcpAccount) -> None:
    exc = _deliver_expecting(hcp, faulty, "lead", Retryable, applies_to="all", error_rate=1.0)
    assert exc.code == "server_error" and exc.http_status in (500, 502, 503)


def test_5xx_on_a_write_is_unknown_outcome(hcp: HcpSandbox, faulty: HcpAccount) -> None:
    exc = _deliver_expecting(hcp, faulty, "lead", UnknownOutcome, applies_to="writes", error_rate=1.0)
    assert exc.code == "server_error_after_send"
    assert hcp.inspect(faulty.company_id)["records"]["leads"] == 0  # nothing committed: the lookup will say so


def test_commit_then_drop_is_unknown_outcome_and_the_lookup_finds_it(hcp: HcpSandbox, faulty: HcpAccount) -> None:
    hcp.put_faults(
        faulty.company_id, seed=2, applies_to="writes", commit_then_fail_rate=1.0, commit_then_fail_mode="drop"
    )
    account = faulty
    request = delivery_request(**unique_homeowner())

    async def body() -> None:
        async with validating_provider(connection(account, hcp.url, mode="job")) as provider:
            with pytest.raises(UnknownOutcome) as exc:
                await provider.deliver(request)  # the customer create already fails after committing
            assert exc.value.code == "connection_lost"
            hcp.clear_faults(faulty.company_id)
            assert await provider.find_existing(request) is None  # the customer exists, the job does not
            created = await provider.deliver(request)
            assert (await provider.find_existing(request)) == type(created)(**{**created.__dict__, "adopted": True})

    run(body())
    assert hcp.inspect(faulty.company_id)["records"]["customers"] == 1  # the retry reused the committed customer


def test_timeout_on_a_write_is_unknown_outcome(hcp: HcpSandbox, faulty: HcpAccount) -> None:
    exc = _deliver_expecting(
        hcp, faulty, "lead", UnknownOutcome, applies_to="writes", timeout_rate=1.0, timeout_s=1.5, timeout_commits=True
    )
    assert exc.code == "timeout"


def test_validation_error_is_permanent_with_field_errors(hcp: HcpSandbox) -> None:
    account = hcp.create_account()
    config = connection(account, hcp.url, mode="job", job_type_id="jt_does_not_exist")

    async def body() -> None:
        async with validating_provider(config) as provider:
            with pytest.raises(Permanent) as exc:
                await provider.deliver(delivery_request(**unique_homeowner()))
        assert exc.value.http_status in (400, 404, 422)
        assert exc.value.field_errors

    run(body())


@pytest.mark.parametrize("header", [True, False])
def test_429_with_and_without_retry_after(hcp: HcpSandbox, header: bool) -> None:
    account = hcp.create_account()
    hcp.storm(account.company_id, seconds=30, retry_after=3, retry_after_header=header)

    async def body() -> list[RateLimited]:
        errors: list[RateLimited] = []
        async with validating_provider(connection(account, hcp.url)) as provider:
            for _ in range(3):
                with pytest.raises(RateLimited) as exc:
                    await provider.deliver(delivery_request())
                errors.append(exc.value)
        return errors

    errors = run(body())
    if header:
        assert [e.retry_after for e in errors] == [3.0, 3.0, 3.0] and {e.code for e in errors} == {"rate_limited"}
    else:
        assert [e.retry_after for e in errors] == [1.0, 2.0, 4.0]  # backoff over consecutive unexplained 429s
        assert {e.code for e in errors} == {"rate_limited_backoff"}
    assert all(e.http_status == 429 for e in errors)


# -- status and revenue -------------------------------------------------------------------------------------


def test_updates_follow_the_lead_to_its_job_and_revenue(hcp: HcpSandbox) -> None:
    account = hcp.create_account()
    config = connection(account, hcp.url, mode="lead")
    won, lost = delivery_request(**unique_homeowner()), delivery_request(**unique_homeowner())
    since = datetime.now(UTC) - timedelta(minutes=1)

    async def deliver() -> tuple[str, str]:
        async with validating_provider(config) as provider:
            return (await provider.deliver(won)).external_id, (await provider.deliver(lost)).external_id

    won_id, lost_id = run(deliver())
    job = hcp.advance_lead(account.company_id, won_id, "won")["job"]
    hcp.advance_lead(account.company_id, lost_id, "lost")

    async def pull() -> Any:
        async with validating_provider(config) as provider:
            return await provider.fetch_updates(since)

    batch = run(pull())
    by_marker = {u.marker: u for u in batch.updates}
    assert by_marker[won.routing_id].external_status == "new"  # needs scheduling
    assert by_marker[won.routing_id].kind == "lead" and by_marker[won.routing_id].read_from == "job"
    assert by_marker[lost.routing_id].external_status == "dismissed"
    assert batch.cursor >= since

    hcp.advance_job(account.company_id, job["id"], "scheduled")
    hcp.advance_job(account.company_id, job["id"], "in_progress")
    done = hcp.advance_job(account.company_id, job["id"], "completed", invoice_total=1234.5)
    batch = run(pull())
    update = next(u for u in batch.updates if u.marker == won.routing_id)
    assert update.external_status == "completed" and update.is_final
    assert update.revenue == Decimal("1234.50") and update.completed_at is not None
    assert update.refs["job_id"] == job["id"]

    # paid later: the invoice's job is read again (revenue unchanged here, but the job is seen)
    hcp.pay_invoice(account.company_id, done["invoice"]["id"])
    later = run(pull())
    assert any(u.marker == won.routing_id and u.revenue == Decimal("1234.50") for u in later.updates)


def test_job_mode_updates_statuses_and_cancel(hcp: HcpSandbox) -> None:
    account = hcp.create_account()
    config = connection(account, hcp.url, mode="job")
    request = delivery_request(**unique_homeowner())
    since = datetime.now(UTC) - timedelta(minutes=1)

    async def deliver() -> str:
        async with validating_provider(config) as provider:
            return (await provider.deliver(request)).external_id

    async def pull() -> Any:
        async with validating_provider(config) as provider:
            return await provider.fetch_updates(since)

    job_id = run(deliver())
    for status, ours in (("scheduled", "scheduled"), ("in_progress", "in_progress"), ("canceled", "canceled")):
        hcp.advance_job(account.company_id, job_id, status)
        update = next(u for u in run(pull()).updates if u.marker == request.routing_id)
        assert (update.kind, update.external_id, update.external_status) == ("job", job_id, ours)
        assert update.revenue is None


def test_updates_ignore_records_without_our_marker(hcp: HcpSandbox) -> None:
    account = hcp.create_account()
    config = connection(account, hcp.url, mode="job")
    since = datetime.now(UTC) - timedelta(minutes=1)
    request = delivery_request(**unique_homeowner())

    async def body() -> Any:
        async with validating_provider(config) as provider:
            await provider.deliver(request)
        async with validating_provider(config) as provider:
            return await provider.fetch_updates(since)

    batch = run(body())
    assert [u.marker for u in batch.updates] == [request.routing_id]
    assert mapping.marker_tag(request.routing_id).startswith(mapping.MARKER_PREFIX)
