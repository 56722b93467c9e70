"""Housecall Pro sandbox and its definition: every endpoint the sandbox serves answers in the definition's
shapes (each exchange validated), the validator catches what the definition does not allow, and the sandbox
rejects request bodies the definition rejects."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx
import pytest

from sandboxes.housecallpro.api import ENDPOINTS
from sandboxes.housecallpro.spec import EXPECT_INVALID_REQUEST, SpecViolation, get_definitions
from tests.support.housecallpro import HcpClient, HcpSandbox, customer_payload, job_payload, lead_payload

BASE = "https://api.housecallpro.com"


def test_every_endpoint_answers_in_the_definitions_shapes(
    hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]
) -> None:
    client = hcp_account()
    company = client.account.company_id
    m = str(uuid.uuid4())
    customer = client.post("/customers", json=customer_payload(m, notes="gate code 1234")).json()
    cid, aid = customer["id"], customer["addresses"][0]["id"]
    client.get("/customers", params={"q": "jane", "page": 1, "page_size": 5, "sort_direction": "asc"})
    client.get(f"/customers/{cid}")
    address = client.post(
        f"/customers/{cid}/addresses",
        json={"street": "1 A St", "city": "LA", "state": "CA", "zip": "90001", "country": "US"},
    ).json()
    client.get(f"/customers/{cid}/addresses", params={"sort_by": "created_at"})
    client.get(f"/customers/{cid}/addresses/{address['id']}")
    lead = client.post(
        "/leads",
        json={
            "customer_id": cid,
            "address_id": aid,
            "tags": [m],
            "lead_source": "TradeEngage",
            "note": m,
            "line_items": [{"name": "Diag", "unit_price": 9900, "quantity": 1}],
        },
    )
    assert lead.status_code == 201
    client.post("/leads", json=lead_payload(str(uuid.uuid4())))
    client.get("/leads", params={"status": "open", "sort_by": "created_at", "page": "1", "page_size": 2})
    client.get(f"/leads/{lead.json()['id']}")
    job_id = client.post(f"/leads/{lead.json()['id']}/convert", json={"type": "job"}).json()["job_id"]
    job_types = client.get("/job_fields/job_types", params={"name": "service"}).json()["job_types"]
    job = client.post(
        "/jobs",
        json=job_payload(
            cid,
            aid,
            m,
            job_fields={"job_type_id": job_types[0]["id"]},
            schedule={
                "scheduled_start": "2030-03-01T10:00:00",
                "scheduled_end": "2030-03-01T12:00:00",
                "arrival_window": 60,
            },
        ),
    ).json()
    hcp.advance_job(company, job["id"], "in_progress")
    invoice = hcp.advance_job(company, job["id"], "completed", invoice_total=199)["invoice"]
    hcp.pay_invoice(company, invoice["id"])
    hcp.advance_job(company, job_id, "canceled")
    client.get("/jobs", params={"customer_id": cid, "work_status": ["completed", "canceled"], "sort_by": "updated_at"})
    # `expand` has its enum on the array itself: no value validates (docs/sandbox.md); the sandbox honours it
    invalid = EXPECT_INVALID_REQUEST
    expanded = client.get(f"/jobs/{job['id']}", params={"expand": ["appointments", "attachments"]}, extensions=invalid)
    expanded = expanded.json()
    assert expanded["attachments"] == [] and expanded["schedule"]["appointments"][0]["arrival_window_minutes"] == 60
    client.get("/jobs", params={"expand": "appointments"}, extensions=invalid)
    plain = client.get(f"/customers/{cid}", params={"expand": ["do_not_service"]}, extensions=invalid)
    assert plain.json()["do_not_service"] is False
    client.get(f"/jobs/{job['id']}/invoices")
    client.get("/invoices", params={"customer_uuid": [cid], "sort_by": "amount", "created_at_min": "2020-01-01"})
    client.get("/lead_sources", params={"q": "trade"})
    client.get("/tags", params={"sort_by": "name"})
    client.post("/webhooks/subscription", json={})
    client.delete("/webhooks/subscription")
    # error answers too: 404s, 422s, a 400 from a body the definition rejects
    client.get("/jobs/job_missing")
    client.get("/leads/lead_missing")
    client.post("/jobs", json=job_payload(cid, "adr_missing", m))
    client.post("/leads", json={"tags": "not-a-list"}, extensions=EXPECT_INVALID_REQUEST)
    report = hcp.inspect(company)
    served = {route for route, statuses in report["requests"].items() if any(s.startswith("2") for s in statuses)}
    assert served == {ep.route_key for ep in ENDPOINTS}
    assert client.transport.exchanges == 27
    client.assert_clean()  # (the fixture checks again at teardown)


def test_the_sandbox_rejects_bodies_the_definition_rejects(hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    bad = client.post("/leads", json={"customer": {"first_name": 5}}, extensions=EXPECT_INVALID_REQUEST)
    assert bad.status_code == 400
    assert bad.json()["error"]["errors"] == {"customer.first_name": ["5 is not of type 'string'"]}
    not_json = client.post(
        "/customers", content=b"{", headers={"content-type": "application/json"}, extensions=EXPECT_INVALID_REQUEST
    )
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    wrong_type = client.post("/leads/lead_x/convert", json={"type": "invoice"}, extensions=EXPECT_INVALID_REQUEST)
    assert wrong_type.status_code == 400 and "type" in wrong_type.json()["error"]["errors"]


def _request(method: str, path: str, body: object = None, **headers: str) -> httpx.Request:
    return httpx.Request(method, BASE + path, json=body, headers={"Authorization": "Token k", **headers})


def _response(request: httpx.Request, status: int, body: object, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        request=request,
        headers={"content-type": "application/json", **headers},
    )


def test_the_validator_catches_violations() -> None:
    defs = get_definitions()
    ok = _request("GET", "/leads/lead_1")
    defs.validate_request(ok)
    with pytest.raises(SpecViolation, match="Authorization: Token"):
        defs.validate_request(httpx.Request("GET", BASE + "/leads"))
    with pytest.raises(SpecViolation, match="no Housecall Pro operation"):
        defs.validate_request(_request("GET", "/bookings"))
    with pytest.raises(SpecViolation, match="tags"):
        defs.validate_request(_request("POST", "/leads", {"tags": "x"}))
    with pytest.raises(SpecViolation, match="not one of"):
        defs.validate_response(ok, _response(ok, 200, {"id": "lead_1", "status": "bogus"}))
    with pytest.raises(SpecViolation, match="None"):  # a non-nullable string sent as null
        defs.validate_response(ok, _response(ok, 200, {"id": "lead_1", "lead_source": None}))
    defs.validate_response(ok, _response(ok, 404, {"error": {"status": 404, "message": "Lead not found"}}))
    with pytest.raises(SpecViolation, match="error shape"):
        defs.validate_response(ok, _response(ok, 404, {"message": "nope"}))
    with pytest.raises(SpecViolation, match="Retry-After"):
        defs.validate_response(
            ok, _response(ok, 429, {"error": {"status": 429, "message": "slow"}}, **{"Retry-After": "soon"})
        )
    defs.validate_response(ok, _response(ok, 429, {"error": {"status": 429, "message": "slow"}}))  # no header: fine
    with pytest.raises(SpecViolation, match="not declared"):
        defs.validate_response(ok, _response(ok, 201, {"id": "lead_1"}))
    errors = defs.body_errors("POST", "/jobs", {"customer_id": "c"})
    assert errors == {"address_id": ["is required"]}
