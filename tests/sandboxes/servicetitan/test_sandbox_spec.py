"""spec.py: the definitions, request/response validation and the validating transports — plus the
sandbox's start-up time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integration_core.local.http_server import free_port, serve_in_thread
from sandboxes.servicetitan.spec import (
    DEFINITIONS_DIR,
    EXPECT_INVALID_REQUEST,
    MODULE_FILES,
    SpecViolation,
    SyncValidatingTransport,
    ValidatingTransport,
    get_definitions,
    module_for_path,
    validate_request,
    validate_response,
)
from tests.support.sandbox import SandboxHandle, booking_payload

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "servicetitan-openapi"
BOOKINGS = "/crm/v2/tenant/1001/booking-provider/100101/bookings"
AUTH = {"ST-App-Key": "ak1.x", "Authorization": "Bearer t"}


def test_definitions_ship_with_the_package_unchanged() -> None:
    for filename in [*MODULE_FILES.values(), "SOURCE.md"]:
        assert (DEFINITIONS_DIR / filename).is_file()
        if SHARED.is_dir():
            assert (DEFINITIONS_DIR / filename).read_bytes() == (SHARED / filename).read_bytes()


def test_paths_map_to_their_definition() -> None:
    assert module_for_path("/crm/v2/tenant/1/customers") == "crm"
    assert module_for_path("/jpm/v2/tenant/1/jobs/5") == "jpm"
    assert module_for_path("/settings/v2/tenant/1/business-units") == "settings"
    assert module_for_path("/marketing/v2/tenant/1/campaigns") == "marketing"
    assert module_for_path("/dispatch/v2/tenant/1/capacity") == "dispatch"
    assert module_for_path("/accounting/v2/tenant/1/invoices") == "accounting"
    assert module_for_path("/connect/token") is None
    defs = get_definitions()
    op = defs.find_operation("GET", "/crm/v2/tenant/1/customers/contacts")
    assert op is not None and op.operation_id == "Customers_GetModifiedContactsList"
    op = defs.find_operation("POST", BOOKINGS)
    assert op is not None and op.operation_id == "Bookings_Create"


def test_validate_request_lists_every_failure() -> None:
    body = booking_payload("R-1", contacts=[{"type": "Pager", "value": "1"}])
    del body["name"]
    request = httpx.Request("POST", f"http://sandbox{BOOKINGS}", json=body, headers=AUTH)
    with pytest.raises(SpecViolation) as caught:
        validate_request(request)
    text = str(caught.value)
    assert "'name' is a required property" in text and "'Pager' is not one of" in text
    assert len(caught.value.errors) == 2
    validate_request(httpx.Request("POST", f"http://sandbox{BOOKINGS}", json=booking_payload("R-1"), headers=AUTH))


def test_unknown_query_parameters_never_fail_validation() -> None:
    request = httpx.Request("GET", f"http://sandbox{BOOKINGS}", params={"nonsense": "1", "page": 2}, headers=AUTH)
    validate_request(request)
    bad_type = httpx.Request("GET", f"http://sandbox{BOOKINGS}", params={"page": "two"}, headers=AUTH)
    with pytest.raises(SpecViolation):
        validate_request(bad_type)


def test_validate_response_checks_status_and_shape() -> None:
    request = httpx.Request("GET", f"http://sandbox{BOOKINGS}/5", headers=AUTH)
    with pytest.raises(SpecViolation, match="'externalId' is a required property"):
        validate_response(request, httpx.Response(200, json={"id": 5}))
    error = {"type": "t", "title": "Booking not found", "status": 404, "traceId": "x", "errors": {}, "data": {}}
    validate_response(request, httpx.Response(404, json=error))
    with pytest.raises(SpecViolation, match="409"):
        validate_response(request, httpx.Response(409, json=error))  # not a status this operation declares
    # 401/403/429 are not in the definitions: only ServiceTitan's error shape is checked (and Retry-After)
    validate_response(request, httpx.Response(401, json={**error, "status": 401}))
    with pytest.raises(SpecViolation, match="Retry-After"):
        validate_response(request, httpx.Response(429, json={**error, "status": 429}))
    with pytest.raises(SpecViolation, match="error shape"):
        validate_response(request, httpx.Response(403, json={"statusCode": 403, "message": "no"}))
    token = httpx.Request("POST", "http://sandbox/connect/token")
    validate_response(token, httpx.Response(400, json={"error": "invalid_client"}))  # not described: skipped


def test_body_errors_use_servicetitan_field_names() -> None:
    body = booking_payload("R-1", contacts=[{"type": "Pager", "value": "1"}], surprise=True)
    del body["externalId"]
    template = "/crm/v2/tenant/{tenant}/booking-provider/{booking_provider}/bookings"
    errors = get_definitions().body_errors("crm", "post", template, body)
    assert set(errors) == {"ExternalId", "Contacts[0].Type", "Surprise"}
    assert errors["ExternalId"] == ["The ExternalId field is required."]


@pytest.fixture()
def liar() -> Iterator[str]:
    """A server on loopback that answers ServiceTitan paths with wrong shapes."""

    async def bad_booking(request: Request) -> Response:
        return JSONResponse({"id": "not-an-int"})

    async def bare_429(request: Request) -> Response:
        return Response(status_code=429)

    app = Starlette(
        routes=[
            Route("/crm/v2/tenant/{t}/booking-provider/{bp}/bookings/{id}", bad_booking),
            Route("/crm/v2/tenant/{t}/customers", bare_429),
        ]
    )
    with serve_in_thread(app) as url:
        yield url


def test_transports_record_violations_of_a_lying_server(liar: str) -> None:
    transport = SyncValidatingTransport(httpx.HTTPTransport())
    with httpx.Client(base_url=liar, transport=transport, headers=AUTH) as client:
        assert client.get(f"{BOOKINGS}/5").json() == {"id": "not-an-int"}  # the caller still gets the answer
        client.get("/crm/v2/tenant/1001/customers")
        client.post(BOOKINGS, json=booking_payload("R-1"), extensions=EXPECT_INVALID_REQUEST)  # but it is valid
    kinds = [(v.kind, v.status) for v in transport.violations]
    assert ("response", 200) in kinds and ("response", 429) in kinds and ("request", None) in kinds
    assert transport.exchanges == 3
    with pytest.raises(AssertionError, match="violate the ServiceTitan definitions"):
        transport.assert_clean()


def test_async_transport_validates_and_can_raise(liar: str) -> None:
    async def go() -> ValidatingTransport:
        transport = ValidatingTransport(httpx.AsyncHTTPTransport(), raise_on_violation=True)
        async with httpx.AsyncClient(base_url=liar, transport=transport, headers=AUTH) as client:
            with pytest.raises(SpecViolation):
                await client.get(f"{BOOKINGS}/5")
        return transport

    transport = asyncio.run(go())
    assert len(transport.violations) == 1


def test_sandbox_traffic_validates_end_to_end(sandbox: SandboxHandle, st_transport: ValidatingTransport) -> None:
    """A full booking flow through the async transport; the fixture asserts no violation at teardown."""
    from integration_core.local.demo import DEMO_TENANTS

    demo = DEMO_TENANTS[2]

    async def go() -> None:
        async with httpx.AsyncClient(base_url=sandbox.url, transport=st_transport) as client:
            form = {
                "grant_type": "client_credentials",
                "client_id": demo.client_id,
                "client_secret": demo.client_secret,
            }
            token = (await client.post("/connect/token", data=form)).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}", "ST-App-Key": demo.app_key}
            path = f"/crm/v2/tenant/{demo.tenant_id}/booking-provider/{demo.booking_provider_id}/bookings"
            created = await client.post(path, json=booking_payload("R-async"), headers=headers)
            assert created.status_code == 200
            listed = await client.get(path, params={"externalId": "R-async", "includeTotal": True}, headers=headers)
            assert listed.json()["totalCount"] == 1

    asyncio.run(go())
    assert st_transport.exchanges == 3 and st_transport.violations == []


def test_serve_starts_and_answers_health() -> None:
    """`serve()` (what `si sandbox serve` runs) starts and answers /_sandbox/health. How fast is a benchmark
    figure (`make bench`, scenario `sandbox_startup`, target < 2 s), not a unit-test assertion."""
    port = free_port()
    code = f"from sandboxes.servicetitan import serve; serve('127.0.0.1', {port}, log_level='warning')"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3])
    try:
        elapsed = None
        while time.monotonic() - started < 60:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=0.5).status_code == 200:
                    elapsed = time.monotonic() - started
                    break
            except httpx.TransportError:
                time.sleep(0.02)
        assert elapsed is not None, "sandbox did not start"
        health = httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=5).json()
        assert health["status"] == "ok" and health["tenants"] == 5  # the demo tenants
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
