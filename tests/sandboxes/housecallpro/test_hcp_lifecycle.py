"""Housecall Pro sandbox: the back office (lead → job → scheduled → in progress → completed → invoice → paid),
the control API's lifecycle calls, inspection of duplicates by referral marker, and the event hook."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from sandboxes.housecallpro import HcpConfig, OfficeConfig
from sandboxes.housecallpro.spec import EXPECT_INVALID_REQUEST
from tests.support.housecallpro import (
    HcpAccount,
    HcpClient,
    HcpSandbox,
    customer_payload,
    job_payload,
    lead_payload,
    serve_hcp_in_thread,
)


def marker() -> str:
    return str(uuid.uuid4())


def test_office_works_a_lead_to_a_paid_invoice(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    company = client.account.company_id
    hcp.office(enabled=False, seed=1, lost_rate=0.0, cancel_rate=0.0, unpaid_rate=0.0, accounts=[company])
    m = marker()
    lead = client.post("/leads", json=lead_payload(m)).json()
    seen: list[str] = []
    job_id = None
    for _ in range(8):
        hcp.office_tick()
        lead_now = client.get(f"/leads/{lead['id']}").json()
        if job_id is None and lead_now["status"] == "won":
            jobs = client.get("/jobs", params={"customer_id": lead["customer"]["id"]}).json()["jobs"]
            job_id = jobs[0]["id"]
        if job_id is not None:
            seen.append(client.get(f"/jobs/{job_id}").json()["work_status"])
    assert seen[:4] == ["needs scheduling", "scheduled", "in progress", "complete unrated"]
    job = client.get(f"/jobs/{job_id}").json()
    assert job["tags"] == [m] and job["work_timestamps"]["completed_at"] and 15000 <= job["total_amount"] <= 250000
    assert job["schedule"]["scheduled_start"] and job["outstanding_balance"] == 0  # paid on the next tick
    (invoice,) = client.get(f"/jobs/{job_id}/invoices").json()["invoices"]
    assert invoice["status"] == "paid" and invoice["amount"] == job["total_amount"] and invoice["paid_at"]
    listed = client.get("/invoices", params={"paid_at_min": "2000-01-01T00:00:00Z"}).json()["invoices"]
    assert [i["job_id"] for i in listed] == [job_id]
    report = hcp.inspect(company)
    assert report["leads_by_status"] == {"won": 1} and report["jobs_by_status"] == {"complete unrated": 1}
    assert report["invoices_by_status"] == {"paid": 1}


def test_office_is_deterministic_per_seed(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    def run() -> tuple[dict[str, int], dict[str, int], list[int]]:
        hcp.reset()
        client = hcp_account(company_id="cmp_det", api_key="det-key")
        hcp.office(enabled=False, seed=42, lost_rate=0.3, cancel_rate=0.3, unpaid_rate=0.3, accounts=["cmp_det"])
        for _ in range(12):
            client.post("/leads", json=lead_payload(marker()))
        for _ in range(8):
            hcp.office_tick()
        report = hcp.inspect("cmp_det")
        totals = sorted(j["total_amount"] for j in client.get("/jobs", params={"page_size": 50}).json()["jobs"])
        return report["leads_by_status"], report["jobs_by_status"], totals

    first, second = run(), run()
    assert first == second
    leads, jobs, _ = first
    assert leads.get("lost", 0) >= 1 and leads.get("won", 0) >= 1
    assert jobs.get("pro canceled", 0) >= 1 and jobs.get("complete unrated", 0) >= 1


def test_office_runs_in_the_background(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    hcp.office(
        enabled=True, pace_s=0.05, lost_rate=0, cancel_rate=0, unpaid_rate=0, accounts=[client.account.company_id]
    )
    try:
        lead = client.post("/leads", json=lead_payload(marker())).json()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if hcp.inspect(client.account.company_id)["invoices_by_status"].get("paid"):
                break
            time.sleep(0.1)
        assert client.get(f"/leads/{lead['id']}").json()["status"] == "won"
        assert hcp.inspect(client.account.company_id)["invoices_by_status"] == {"paid": 1}
    finally:
        hcp.office(enabled=False)


def test_control_lifecycle_calls(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    company = client.account.company_id
    lead = client.post("/leads", json=lead_payload(marker())).json()
    won = hcp.advance_lead(company, lead["id"], "won")
    job_id = won["job"]["id"]
    assert won["lead"]["status"] == "won" and won["job"]["work_status"] == "needs scheduling"
    assert (
        hcp.control.post(
            f"/_sandbox/accounts/{company}/leads/{lead['id']}/advance", json={"status": "lost"}
        ).status_code
        == 409
    )
    hcp.advance_job(company, job_id, "scheduled", start="2030-02-01T15:00:00Z")
    assert client.get(f"/jobs/{job_id}").json()["schedule"]["scheduled_start"].startswith("2030-02-01T15:00:00")
    hcp.advance_job(company, job_id, "in_progress")
    done = hcp.advance_job(company, job_id, "completed", invoice_total=321.5)
    assert done["job"]["total_amount"] == 32150 and done["invoice"]["amount"] == 32150
    assert done["invoice"]["status"] == "open" and done["job"]["outstanding_balance"] == 32150
    paid = hcp.pay_invoice(company, done["invoice"]["id"])
    assert paid["invoice"]["status"] == "paid" and paid["invoice"]["due_amount"] == 0
    assert client.get(f"/jobs/{job_id}").json()["outstanding_balance"] == 0
    again = hcp.control.post(f"/_sandbox/accounts/{company}/jobs/{job_id}/advance", json={"status": "canceled"})
    assert again.status_code == 409
    lost = client.post("/leads", json=lead_payload(marker())).json()
    assert hcp.advance_lead(company, lost["id"], "lost")["lead"]["lost_at"]
    other = client.post("/leads", json=lead_payload(marker())).json()
    est = hcp.advance_lead(company, other["id"], "won", to="estimate")
    assert est["estimate_id"].startswith("est_") and est["lead"]["status"] == "won"
    customer = client.post("/customers", json=customer_payload()).json()
    job = client.post("/jobs", json=job_payload(customer["id"], customer["addresses"][0]["id"], marker())).json()
    canceled = hcp.advance_job(company, job["id"], "canceled", by="user")
    assert canceled["job"]["work_status"] == "user canceled" and canceled["job"]["canceled_at"]
    assert client.get("/jobs", params={"work_status": ["canceled"]}).json()["total_items"] == 1
    assert client.get("/jobs", params={"work_status": ["completed"]}).json()["total_items"] == 1
    # the definition puts its enum on the `status` array itself, so no `status` value validates (docs/sandbox.md);
    # the sandbox filters by it all the same
    paid_only = client.get("/invoices", params={"status": "paid"}, extensions=EXPECT_INVALID_REQUEST).json()
    assert [i["id"] for i in paid_only["invoices"]] == [done["invoice"]["id"]]


def test_inspection_groups_duplicates_by_marker(hcp: HcpSandbox, hcp_account: Callable[..., HcpClient]) -> None:
    client = hcp_account()
    company = client.account.company_id
    once, twice, in_notes = marker(), marker(), marker()
    tag = f"tradeengage:{twice}"
    client.post("/leads", json=lead_payload(once))
    client.post("/leads", json=lead_payload(tag, note="no marker here"))
    client.post("/leads", json=lead_payload(tag, note="again"))
    customer = client.post("/customers", json=customer_payload()).json()
    address = customer["addresses"][0]["id"]
    for _ in range(2):
        body = job_payload(
            customer["id"], address, "plain-tag", notes=f"Referral {in_notes}", lead_source="TradeEngage"
        )
        client.post("/jobs", json=body)
    client.post("/jobs", json=job_payload(customer["id"], address, "x", notes="n", lead_source=f"ref {once}"))
    report = hcp.inspect(company)
    assert report["markers"]["leads"][once] == {"tags": 1, "notes": 1}
    assert report["markers"]["leads"][twice] == {"tags": 2}
    assert report["duplicates"]["leads"] == {twice: {"tags": 2}}
    assert report["duplicates"]["jobs"] == {in_notes: {"notes": 2}}
    assert report["markers"]["jobs"][once] == {"lead_source": 1}
    # a pattern of one's own (one group = the marker)
    custom = hcp.inspect(company, pattern=r"tradeengage:(\S+)")
    assert custom["duplicates"]["leads"] == {twice: {"tags": 2}} and once not in custom["markers"]["leads"]
    bad = hcp.control.get(f"/_sandbox/accounts/{company}/inspect", params={"pattern": "("})
    assert bad.status_code == 422


def test_events_reach_listeners_in_order() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def on_event(self, kind: str, payload: dict[str, Any]) -> None:
            events.append((kind, payload))

    class Broken:
        def on_event(self, kind: str, payload: dict[str, Any]) -> None:
            raise RuntimeError("listener bug")

    config = HcpConfig(office=OfficeConfig(enabled=False, lost_rate=0, cancel_rate=0, unpaid_rate=0))
    with serve_hcp_in_thread(config) as (url, app):
        app.state.sandbox.add_listener(Broken())  # never fails a write
        app.state.sandbox.add_listener(Recorder())
        client = HcpClient(url, HcpAccount.demo())
        try:
            lead = client.post("/leads", json=lead_payload(marker()))
            assert lead.status_code == 201
            for _ in range(6):
                httpx.post(f"{url}/_sandbox/office/tick", timeout=10)
            client.assert_clean()
        finally:
            client.close()
        log = httpx.get(f"{url}/_sandbox/events", timeout=10).json()
    kinds = [k for k, _ in events]
    assert kinds == [
        "customer.created",
        "lead.created",
        "job.created",
        "lead.converted",
        "job.scheduled",
        "job.started",
        "job.completed",
        "invoice.created",
        "invoice.paid",
    ]
    by_kind = dict(events)
    company = HcpAccount.demo().company_id
    assert all(p["company_id"] == company and p["event"] == k and p["id"].startswith("evt_") for k, p in events)
    assert by_kind["lead.converted"]["job_id"] == by_kind["job.created"]["job"]["id"]
    assert by_kind["job.completed"]["job"]["work_status"] == "complete unrated"
    assert by_kind["invoice.paid"]["invoice"]["status"] == "paid"
    assert by_kind["invoice.paid"]["invoice"]["job_id"] == by_kind["job.created"]["job"]["id"]
    assert log["emitted"] == len(events) and [e["event"] for e in log["events"]] == kinds


def test_accounts_control_api(hcp: HcpSandbox) -> None:
    created = hcp.call(
        "POST", "/accounts", {"company_id": "cmp_x", "name": "Sparky", "api_keys": ["k1", "k2"]}, expect=201
    )
    assert created["api_keys"] == ["k1", "k2"] and created["name"] == "Sparky"
    assert hcp.call("POST", "/accounts", {"company_id": "cmp_x"}, expect=409)
    assert hcp.call("POST", "/accounts", {"api_key": "k1"}, expect=409)  # a key belongs to one company
    assert hcp.call("POST", "/accounts", {"bogus": 1}, expect=422)["field"] == "bogus"
    assert hcp.call("POST", "/accounts", {"rate": 0}, expect=422)["field"] == "rate"
    listed = [a["company_id"] for a in hcp.call("GET", "/accounts")["accounts"]]
    assert "cmp_x" in listed and HcpAccount.demo().company_id in listed
    patched = hcp.patch_account("cmp_x", api_keys=["k3"], rate=5, retry_after="never", name="Sparky Inc")
    assert patched["api_keys"] == ["k3"] and patched["rate_limit"] == {"rate": 5.0, "burst": 5, "retry_after": "never"}
    old = httpx.get(f"{hcp.url}/leads", headers={"Authorization": "Token k1"})
    new = httpx.get(f"{hcp.url}/leads", headers={"Authorization": "Token k3"})
    assert (old.status_code, new.status_code) == (401, 200)
    assert hcp.call("GET", "/accounts/cmp_nope", expect=404)
    hcp.delete_account("cmp_x")
    assert hcp.call("GET", "/accounts/cmp_x", expect=404)
    health = hcp.call("GET", "/health")
    assert health["status"] == "ok" and health["provider"] == "housecallpro" and health["definitions_loaded"]
    office = hcp.call("PUT", "/office", {"pace_s": 0}, expect=422)
    assert office["field"] == "pace_s"
    # reset drops runtime accounts and keeps the seeded demo one
    hcp.create_account(company_id="cmp_y")
    hcp.reset()
    assert [a["company_id"] for a in hcp.call("GET", "/accounts")["accounts"]] == [HcpAccount.demo().company_id]
