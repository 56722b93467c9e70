"""Sandbox: rate limits, 429 storms and injected faults — each observable by a client over real HTTP, and
each reflected in the inspection endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sandboxes.servicetitan.spec import ValidatingTransport
from tests.support.sandbox import BOOKINGS, SandboxHandle, TenantClient, TenantCreds, booking_payload

ROUTE = "POST /crm/v2/tenant/{tenant}/booking-provider/{booking_provider}/bookings"


def bookings_with(client: TenantClient, external_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get(BOOKINGS, params={"externalId": external_id}).json()["data"]
    return data


# -- rate limits ----------------------------------------------------------------------------------


def test_429_with_retry_after_under_a_tight_budget(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    creds = fresh_tenant(rate=0.5, burst=3)  # a token every 2 s: no refill sneaks in on a slow machine
    client = TenantClient(st_client, creds)
    statuses = [client.get(BOOKINGS).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    limited = client.get(BOOKINGS)
    assert limited.status_code == 429
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after >= 1
    body = limited.json()
    assert body["status"] == 429 and body["title"] == f"Rate limit is exceeded. Try again in {retry_after} seconds."
    assert body["errors"] == {} and body["data"] == {} and body["traceId"]
    deadline = time.monotonic() + 10  # a token comes back within 2 s
    while (after := client.get(BOOKINGS).status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert after == 200
    report = sandbox.inspect(creds.tenant_id)
    assert report["rate_limited"] >= 2
    assert report["requests"]["GET /crm/v2/tenant/{tenant}/booking-provider/{booking_provider}/bookings"]["429"] >= 2


def test_budget_is_per_app_key_and_tenant_and_reconfigurable(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    a, b = fresh_tenant(rate=0.1, burst=1), fresh_tenant(rate=0.1, burst=1)  # one token per 10 s
    ca, cb = TenantClient(st_client, a), TenantClient(st_client, b)
    assert ca.get(BOOKINGS).status_code == 200
    assert ca.get(BOOKINGS).status_code == 429
    assert cb.get(BOOKINGS).status_code == 200  # another tenant's bucket
    sandbox.patch_tenant(a.tenant_id, app_keys=[a.app_key, "ak1.second-app"])
    assert ca.get(BOOKINGS, headers={"ST-App-Key": "ak1.second-app"}).status_code == 200  # another app's bucket
    sandbox.patch_tenant(a.tenant_id, rate=100, burst=100)
    time.sleep(0.05)
    assert ca.get(BOOKINGS).status_code == 200


def test_concurrent_burst_is_capped_and_measured(
    sandbox: SandboxHandle, st_transport: ValidatingTransport, fresh_tenant: Callable[..., TenantCreds]
) -> None:
    creds = fresh_tenant(rate=1, burst=10)  # 40 at once: 10 pass, the rest are 429 however slowly they arrive
    token = sandbox.token(creds)

    async def hammer() -> list[int]:
        async with httpx.AsyncClient(base_url=sandbox.url, transport=st_transport, timeout=10) as client:
            path = f"/crm/v2/tenant/{creds.tenant_id}/customers"
            responses = await asyncio.gather(*(client.get(path, headers=creds.headers(token)) for _ in range(40)))
            return [r.status_code for r in responses]

    statuses = asyncio.run(hammer())
    assert statuses.count(200) >= 10 and statuses.count(429) >= 20
    report = sandbox.inspect(creds.tenant_id, timestamps=True)
    assert report["max_requests_in_any_1s_window"] <= 10 + 1  # burst + one second of refill
    assert report["accepted_requests"] == statuses.count(200) == len(report["accepted_timestamps"])
    assert report["rate_limited"] == statuses.count(429)


def test_429_storm(st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle) -> None:
    creds = fresh_tenant()
    client = TenantClient(st_client, creds)
    sandbox.storm(creds.tenant_id, seconds=3, retry_after=30)
    first = client.get(BOOKINGS)
    assert first.status_code == 429 and first.headers["Retry-After"] == "30"
    assert first.json()["title"] == "Rate limit is exceeded. Try again in 30 seconds."
    assert client.post(BOOKINGS, json=booking_payload("R-1")).status_code == 429
    deadline = time.monotonic() + 10
    while sandbox.inspect(creds.tenant_id)["faults"]["storm_active"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get(BOOKINGS).status_code == 200
    assert client.get(BOOKINGS).json()["data"] == []  # the storm let nothing through


# -- faults ---------------------------------------------------------------------------------------


def test_error_fault_creates_nothing(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    creds = fresh_tenant()
    client = TenantClient(st_client, creds)
    sandbox.put_faults(creds.tenant_id, error_rate=1.0, error_statuses=[503])
    response = client.post(BOOKINGS, json=booking_payload("R-1"))
    assert response.status_code == 503 and response.json()["status"] == 503
    assert client.get(BOOKINGS).status_code == 200  # faults apply to writes only by default
    assert bookings_with(client, "R-1") == []
    assert sandbox.inspect(creds.tenant_id)["faults"]["counts"] == {"error": 1}


def test_commit_then_fail_creates_exactly_one_record(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    creds = fresh_tenant()
    client = TenantClient(st_client, creds)
    sandbox.put_faults(creds.tenant_id, commit_then_fail_rate=1.0, commit_then_fail_status=502)
    response = client.post(BOOKINGS, json=booking_payload("R-1"))
    assert response.status_code == 502
    assert len(bookings_with(client, "R-1")) == 1
    report = sandbox.inspect(creds.tenant_id)
    assert report["records"]["bookings"] == 1 and report["requests"][ROUTE] == {"502": 1}


def test_commit_then_drop_closes_the_connection_mid_response(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    creds = fresh_tenant()
    client = TenantClient(st_client, creds)
    sandbox.put_faults(creds.tenant_id, commit_then_fail_rate=1.0, commit_then_fail_mode="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(BOOKINGS, json=booking_payload("R-1"))
    assert len(bookings_with(client, "R-1")) == 1
    report = sandbox.inspect(creds.tenant_id)
    assert report["requests"][ROUTE] == {"dropped": 1}
    assert report["faults"]["log"] == [{"seq": 1, "route": ROUTE, "fault": "commit_then_fail", "mode": "drop"}]


@pytest.mark.parametrize("commits", [True, False])
def test_timeout_holds_the_response(
    commits: bool,
    st_client: httpx.Client,
    fresh_tenant: Callable[..., TenantCreds],
    sandbox: SandboxHandle,
) -> None:
    creds = fresh_tenant()
    client = TenantClient(st_client, creds)
    sandbox.put_faults(creds.tenant_id, timeout_rate=1.0, timeout_s=2.0, timeout_commits=commits)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post(BOOKINGS, json=booking_payload("R-1"), timeout=0.2)
    assert 0.15 < time.monotonic() - started < 1.5  # the client gave up long before the 2-s hold ended
    time.sleep(2.2)  # let the held request finish on the server
    assert len(bookings_with(client, "R-1")) == (1 if commits else 0)

    held = client.post(BOOKINGS, json=booking_payload("R-2"), timeout=15)  # a patient client gets the answer
    assert held.status_code == (200 if commits else 504)


def test_latency_and_applies_to_all(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    creds = fresh_tenant()
    client = TenantClient(st_client, creds)
    sandbox.put_faults(creds.tenant_id, applies_to="all", latency={"kind": "fixed", "ms": 150})
    started = time.monotonic()
    assert client.get(BOOKINGS).status_code == 200
    assert time.monotonic() - started >= 0.15
    sandbox.put_faults(creds.tenant_id, latency={"kind": "uniform", "min_ms": 100, "max_ms": 120})
    applicable = sandbox.inspect(creds.tenant_id)["faults"]["applicable_requests"]
    assert client.get(BOOKINGS).status_code == 200  # reads are not affected: applies_to defaults to writes
    assert sandbox.inspect(creds.tenant_id)["faults"]["applicable_requests"] == applicable
    started = time.monotonic()
    client.create_booking("R-1")
    assert time.monotonic() - started >= 0.1


def test_fault_config_is_validated(sandbox: SandboxHandle, demo_tenant: TenantCreds) -> None:
    url = f"{sandbox.url}/_sandbox/tenants/{demo_tenant.tenant_id}/faults"
    too_much = httpx.put(url, json={"error_rate": 0.7, "timeout_rate": 0.5})
    assert too_much.status_code == 422 and too_much.json()["field"] == "error_rate"
    assert httpx.put(url, json={"applies_to": "reads"}).status_code == 422
    assert httpx.put(url, json={"error_statuses": [418]}).status_code == 422
    assert httpx.put(url, json={"surprise": 1}).json()["field"] == "surprise"
    assert httpx.put(f"{sandbox.url}/_sandbox/tenants/424242/faults", json={}).status_code == 404


def test_fault_sequence_is_reproducible_for_a_seed(
    st_client: httpx.Client, fresh_tenant: Callable[..., TenantCreds], sandbox: SandboxHandle
) -> None:
    # a budget no burst of 90 requests can reach: on a fast machine 429s would interleave with the faults
    creds = fresh_tenant(rate=10_000, burst=10_000)
    client = TenantClient(st_client, creds)
    faults = {"error_rate": 0.3, "commit_then_fail_rate": 0.2, "error_statuses": [500, 502, 503]}

    def run(seed: int) -> list[int]:
        sandbox.put_faults(creds.tenant_id, seed=seed, **faults)  # restarts the tenant's RNG
        return [client.post(BOOKINGS, json=booking_payload(f"R-{i}")).status_code for i in range(30)]

    first, second, other = run(42), run(42), run(43)
    assert first == second and first != other
    assert {500, 502, 503} & set(first) and 200 in first
    log = sandbox.inspect(creds.tenant_id)["faults"]["log"]
    assert [e["seq"] for e in log] == [i + 1 for i, s in enumerate(other) if s != 200]


# -- inspection -----------------------------------------------------------------------------------


def test_inspection_counts_and_duplicates(st: TenantClient, sandbox: SandboxHandle) -> None:
    guid = st.creds.external_data_guid
    for ext in ("R-1", "R-2", "R-2"):
        st.create_booking(ext)
    for ref in ("J-1", "J-1", "J-1", "J-2"):
        st.create_job(externalData={"applicationGuid": guid, "externalData": [{"key": "referralId", "value": ref}]})
    report = sandbox.inspect(st.creds.tenant_id)
    assert report["records"] == {"bookings": 3, "customers": 4, "locations": 4, "jobs": 4, "invoices": 0}
    assert report["markers"]["bookings"] == {"R-1": 1, "R-2": 2}
    assert report["markers"]["jobs"] == {"referralId=J-1": 3, "referralId=J-2": 1}
    assert report["duplicates"] == {
        "bookings": {"R-2": 2},
        "customers": {},
        "locations": {},
        "jobs": {"referralId=J-1": 3},
    }
    assert report["requests"][ROUTE] == {"200": 3}
    assert report["requests"]["POST /jpm/v2/tenant/{tenant}/jobs"] == {"200": 4}
    assert report["requests_by_status"]["200"] >= 11


def test_reset_clears_records_and_counters_and_keeps_seeded_tenants(
    st: TenantClient, sandbox: SandboxHandle, fresh_tenant: Callable[..., TenantCreds]
) -> None:
    extra = fresh_tenant()
    st.create_booking("R-1")
    sandbox.put_faults(st.creds.tenant_id, error_rate=1.0)
    sandbox.reset()
    report = sandbox.inspect(st.creds.tenant_id)
    assert report["records"]["bookings"] == 0 and report["requests"] == {}
    assert report["faults"]["config"]["error_rate"] == 0.0
    assert httpx.get(f"{sandbox.url}/_sandbox/tenants/{extra.tenant_id}").status_code == 404
    assert st.get(BOOKINGS).status_code == 200  # seeded tenants and their tokens survive a reset
    health = httpx.get(f"{sandbox.url}/_sandbox/health").json()
    assert health["status"] == "ok" and health["tenants"] == 5
