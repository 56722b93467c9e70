"""Housecall Pro sandbox: every endpoint the referral service uses answers in the definition's shapes (each
exchange validated against housecall.v1.yaml by the client's transport), with auth and paging/filters."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from sandboxes.housecallpro.spec import EXPECT_INVALID_REQUEST
from tests.support.housecallpro import (
    ADDRESS,
    HcpAccount,
    HcpClient,
    HcpSandbox,
    customer_payload,
    job_payload,
    lead_payload,
)


def marker() -> str:
    return str(uuid.uuid4())


def test_customers_and_addresses(hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    created = client.post("/customers", json=customer_payload(tags=["vip"], lead_source="TradeEngage"))
    assert created.status_code == 201, created.text
    customer = created.json()
    assert customer["id"].startswith("cus_") and customer["tags"] == ["vip"]
    assert customer["addresses"][0]["zip"] == "90210" and customer["company_id"] == client.account.company_id
    cid = customer["id"]
    assert client.get(f"/customers/{cid}").json() == customer
    added = client.post(f"/customers/{cid}/addresses", json={**ADDRESS, "street": "99 Elm St"})
    assert added.status_code == 200 and added.json()["street"] == "99 Elm St"
    listed = client.get(f"/customers/{cid}/addresses", params={"sort_direction": "asc"}).json()
    assert [a["street"] for a in listed["addresses"]] == ["12 Ocean Ave", "99 Elm St"]
    one = client.get(f"/customers/{cid}/addresses/{added.json()['id']}")
    assert one.status_code == 200 and one.json()["id"] == added.json()["id"]
    # search: by name, phone (any format), address; paging
    client.post("/customers", json=customer_payload(first_name="Bob", mobile_number="212-555-0199", email=None))
    assert client.get("/customers", params={"q": "(310) 555-0100"}).json()["total_items"] == 1
    assert client.get("/customers", params={"q": "bob"}).json()["customers"][0]["first_name"] == "Bob"
    assert client.get("/customers", params={"q": "ocean ave"}).json()["total_items"] == 2
    page = client.get("/customers", params={"page": 2, "page_size": 1}).json()
    assert (page["page"], page["page_size"], page["total_pages"], page["total_items"]) == (2, 1, 2, 2)
    assert client.get("/customers/cus_nope").status_code == 404
    # no contact field at all → 422
    assert client.post("/customers", json={"addresses": [ADDRESS]}).status_code == 422


def test_leads_create_list_filter_convert(hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    m1, m2 = marker(), marker()
    first = client.post("/leads", json=lead_payload(m1))
    assert first.status_code == 201, first.text
    lead = first.json()
    assert lead["status"] == "open" and lead["tags"] == [m1] and lead["lead_source"] == "TradeEngage"
    assert lead["customer"]["first_name"] == "Jane" and lead["address"]["zip"] == "90210"
    # a lead for an existing customer and address
    customer = client.get("/customers").json()["customers"][0]
    second = client.post(
        "/leads", json={"customer_id": customer["id"], "address_id": customer["addresses"][0]["id"], "tags": [m2]}
    )
    assert second.status_code == 201 and second.json()["customer"]["id"] == customer["id"]
    assert client.get(f"/leads/{lead['id']}").json() == lead
    assert client.get("/leads").json()["total_items"] == 2
    # look up by marker: tags are created on use and filterable by id
    tags = {t["name"]: t["id"] for t in client.get("/tags", params={"page_size": 50}).json()["tags"]}
    by_tag = client.get("/leads", params={"tag_ids": [tags[m1]]}).json()
    assert [ld["id"] for ld in by_tag["leads"]] == [lead["id"]]
    assert client.get("/leads", params={"lead_source": "TradeEngage"}).json()["total_items"] == 1
    assert client.get("/leads", params={"customer_id": customer["id"]}).json()["total_items"] == 2
    assert "TradeEngage" in [s["name"] for s in client.get("/lead_sources").json()["lead_sources"]]
    # convert → a job (needs scheduling) carrying the marker
    converted = client.post(f"/leads/{lead['id']}/convert", json={"type": "job"})
    assert converted.status_code == 201 and set(converted.json()) == {"job_id"}
    job = client.get(f"/jobs/{converted.json()['job_id']}").json()
    assert job["work_status"] == "needs scheduling" and job["tags"] == [m1] and m1 in job["notes"][0]["content"]
    assert client.get(f"/leads/{lead['id']}").json()["status"] == "won"
    assert client.get("/leads", params={"status": "won"}).json()["total_items"] == 1
    again = client.post(f"/leads/{lead['id']}/convert", json={"type": "job"})
    assert again.status_code == 422
    assert client.get("/leads/lead_nope").status_code == 404
    # neither customer nor customer_id
    assert client.post("/leads", json={"tags": [m1]}).status_code == 422
    assert client.post("/leads", json={"customer_id": "cus_nope"}).status_code == 404


def test_jobs_create_list_filter_invoices(hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    customer = client.post("/customers", json=customer_payload()).json()
    cid, aid = customer["id"], customer["addresses"][0]["id"]
    m = marker()
    job_types = client.get("/job_fields/job_types").json()["job_types"]
    body = job_payload(cid, aid, m, job_fields={"job_type_id": job_types[0]["id"]})
    created = client.post("/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["work_status"] == "needs scheduling" and job["total_amount"] == 12900 and job["tags"] == [m]
    assert job["job_fields"]["job_type"]["id"] == job_types[0]["id"] and job["address"]["id"] == aid
    scheduled = client.post(
        "/jobs",
        json=job_payload(
            cid,
            aid,
            marker(),
            schedule={"scheduled_start": "2030-01-05T16:00:00", "scheduled_end": "2030-01-05T18:00:00"},
        ),
    ).json()
    assert scheduled["work_status"] == "scheduled" and scheduled["schedule"]["scheduled_start"].startswith("2030-01-05")
    assert client.get("/jobs", params={"customer_id": cid}).json()["total_items"] == 2
    assert client.get("/jobs", params={"work_status": ["unscheduled"]}).json()["jobs"][0]["id"] == job["id"]
    both = client.get("/jobs", params={"work_status": ["unscheduled", "scheduled"], "sort_direction": "asc"}).json()
    assert [j["id"] for j in both["jobs"]] == [job["id"], scheduled["id"]]
    window = client.get("/jobs", params={"scheduled_start_min": "2030-01-01T00:00:00Z"}).json()
    assert [j["id"] for j in window["jobs"]] == [scheduled["id"]]
    assert client.get(f"/jobs/{job['id']}/invoices").json() == {"invoices": []}
    assert client.get("/invoices").json()["total_items"] == 0
    assert client.get("/jobs/job_nope").status_code == 404
    # an address of another customer, an unknown customer, a missing required field
    other = client.post("/customers", json=customer_payload(first_name="Other")).json()
    assert client.post("/jobs", json=job_payload(cid, other["addresses"][0]["id"], m)).status_code == 422
    assert client.post("/jobs", json=job_payload("cus_nope", aid, m)).status_code == 422
    bad = client.post("/jobs", json={"customer_id": cid}, extensions=EXPECT_INVALID_REQUEST)
    assert bad.status_code == 400 and "address_id" in bad.json()["error"]["errors"]


def test_webhook_subscription(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    assert client.post("/webhooks/subscription", json={}).status_code == 200
    assert hcp.call("GET", f"/accounts/{client.account.company_id}")["webhook_subscribed"] is True
    assert client.delete("/webhooks/subscription").status_code == 200
    assert hcp.call("GET", f"/accounts/{client.account.company_id}")["webhook_subscribed"] is False


def test_auth_missing_or_wrong_token_is_401(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    for headers in ({"Authorization": ""}, {"Authorization": f"Bearer {client.account.api_key}"}):
        response = client.get("/leads", headers=headers, extensions=EXPECT_INVALID_REQUEST)
        assert response.status_code == 401
        assert response.json()["error"]["status"] == 401
    wrong = client.get("/leads", headers={"Authorization": "Token wrong-key"})  # well-formed, unknown key
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "Invalid API key."
    # a deleted account's key stops working
    hcp.delete_account(client.account.company_id)
    assert client.get("/leads").status_code == 401
    # and the demo account is seeded with its key
    demo = HcpClient(hcp.url, HcpAccount.demo())
    try:
        assert demo.get("/leads").status_code == 200
        demo.assert_clean()
    finally:
        demo.close()


def test_accounts_are_isolated(hcp_account: Callable[..., HcpClient]) -> None:
    a, b = hcp_account(), hcp_account()
    customer = a.post("/customers", json=customer_payload()).json()
    assert b.get(f"/customers/{customer['id']}").status_code == 404
    assert b.get("/customers").json()["total_items"] == 0


def test_unknown_route_and_method(hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    raw = httpx.get(
        f"{client.http.base_url}/nothing-here", headers={"Authorization": f"Token {client.account.api_key}"}
    )
    assert raw.status_code == 404 and raw.json()["error"]["status"] == 404


def test_no_idempotency_keys_a_repeated_create_is_a_duplicate(
    hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]
) -> None:
    """Housecall Pro has no idempotency keys: the same create sent twice (whatever its headers) makes two leads,
    and inspection reports the marker as duplicated — what the client's lookup-before-send must prevent."""
    client = hcp_account()
    m = marker()
    headers = {"Idempotency-Key": m}
    first = client.post("/leads", json=lead_payload(m), headers=headers)
    second = client.post("/leads", json=lead_payload(m), headers=headers)
    assert first.status_code == second.status_code == 201 and first.json()["id"] != second.json()["id"]
    assert hcp.inspect(client.account.company_id)["duplicates"]["leads"] == {m: {"tags": 2, "notes": 2}}
