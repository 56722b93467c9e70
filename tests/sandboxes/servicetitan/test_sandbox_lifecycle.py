"""Sandbox: life after delivery — bookings and jobs moved by the control API and by the background office."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.sandbox import BOOKINGS, JOBS, SandboxHandle, TenantClient

INVOICES = "/accounting/v2/tenant/{tenant}/invoices"


def test_booking_accepted_then_converted_creates_a_job(st: TenantClient, sandbox: SandboxHandle) -> None:
    booking = st.create_booking("R-1", priority="High")
    accepted = sandbox.advance_booking(st.creds.tenant_id, booking["id"], "Accepted")["booking"]
    assert accepted["status"] == "Accepted" and accepted["modifiedOn"] > booking["modifiedOn"]
    converted = sandbox.advance_booking(st.creds.tenant_id, booking["id"], "Converted")
    job_id = converted["booking"]["jobId"]
    assert converted["booking"]["status"] == "Converted" and job_id == converted["job"]["id"]

    seen = st.get(BOOKINGS + f"/{booking['id']}").json()
    assert seen["status"] == "Converted" and seen["jobId"] == job_id
    job = st.get(JOBS + f"/{job_id}").json()
    assert job["bookingId"] == booking["id"] and job["jobStatus"] == "Scheduled" and job["priority"] == "High"
    assert st.get(JOBS, params={"bookingId": booking["id"]}).json()["data"][0]["id"] == job_id
    changed = st.get(BOOKINGS, params={"modifiedOnOrAfter": accepted["modifiedOn"]}).json()["data"]
    assert [b["id"] for b in changed] == [booking["id"]]


def test_booking_dismissed_and_illegal_transitions(st: TenantClient, sandbox: SandboxHandle) -> None:
    booking = st.create_booking("R-1")
    dismissed = sandbox.advance_booking(st.creds.tenant_id, booking["id"], "Dismissed", dismissing_reason_id=7)
    assert dismissed["booking"]["status"] == "Dismissed" and dismissed["booking"]["dismissingReasonId"] == 7
    again = httpx.post(
        f"{sandbox.url}/_sandbox/tenants/{st.creds.tenant_id}/bookings/{booking['id']}/advance",
        json={"status": "Converted"},
    )
    assert again.status_code == 409
    bad = httpx.post(
        f"{sandbox.url}/_sandbox/tenants/{st.creds.tenant_id}/bookings/{booking['id']}/advance",
        json={"status": "Sold"},
    )
    assert bad.status_code == 422


def test_job_progression_to_completed_with_invoice(st: TenantClient, sandbox: SandboxHandle) -> None:
    job = st.create_job()
    stamps = [job["modifiedOn"]]
    for status in ("Dispatched", "InProgress"):
        moved = sandbox.advance_job(st.creds.tenant_id, job["id"], status)["job"]
        assert moved["jobStatus"] == status
        stamps.append(moved["modifiedOn"])
    done = sandbox.advance_job(st.creds.tenant_id, job["id"], "Completed", invoice_total="842.10")
    stamps.append(done["job"]["modifiedOn"])
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    assert done["invoice"]["total"] == "842.10"

    fetched = st.get(JOBS + f"/{job['id']}").json()
    assert fetched["jobStatus"] == "Completed" and fetched["completedOn"] == fetched["modifiedOn"]
    completed = st.get(JOBS, params={"completedOnOrAfter": fetched["completedOn"]}).json()["data"]
    assert [j["id"] for j in completed] == [job["id"]]
    (invoice,) = st.get(INVOICES, params={"jobId": job["id"]}).json()["data"]
    assert invoice["total"] == "842.10"

    terminal = httpx.post(
        f"{sandbox.url}/_sandbox/tenants/{st.creds.tenant_id}/jobs/{job['id']}/advance",
        json={"status": "Canceled"},
    )
    assert terminal.status_code == 409


def test_an_invoice_adjusted_after_completion(st: TenantClient, sandbox: SandboxHandle) -> None:
    job = st.create_job()
    done = sandbox.advance_job(st.creds.tenant_id, job["id"], "Completed", invoice_total=100)
    invoice = done["invoice"]
    adjusted = sandbox.adjust_invoice(st.creds.tenant_id, invoice["id"], "149.99")["invoice"]
    assert adjusted["total"] == "149.99" and adjusted["modifiedOn"] > invoice["modifiedOn"]
    assert st.get(JOBS + f"/{job['id']}").json()["modifiedOn"] == done["job"]["modifiedOn"]  # the job is untouched
    edited = st.get(INVOICES, params={"modifiedOnOrAfter": adjusted["modifiedOn"]}).json()["data"]
    assert [(i["id"], i["total"]) for i in edited] == [(invoice["id"], "149.99")]

    base = f"{sandbox.url}/_sandbox/tenants/{st.creds.tenant_id}/invoices"
    assert httpx.post(f"{base}/987654/adjust", json={"total": 1}).status_code == 404
    for body in ({}, {"total": -1}, {"total": "abc"}, {"total": True}):
        bad = httpx.post(f"{base}/{invoice['id']}/adjust", json=body)
        assert bad.status_code == 422 and bad.json()["field"] == "total", body


def test_job_cancel_and_no_going_back(st: TenantClient, sandbox: SandboxHandle) -> None:
    job = st.create_job()
    sandbox.advance_job(st.creds.tenant_id, job["id"], "InProgress")
    back = httpx.post(
        f"{sandbox.url}/_sandbox/tenants/{st.creds.tenant_id}/jobs/{job['id']}/advance",
        json={"status": "Dispatched"},
    )
    assert back.status_code == 409
    canceled = sandbox.advance_job(st.creds.tenant_id, job["id"], "Canceled")["job"]
    assert canceled["jobStatus"] == "Canceled" and canceled["completedOn"] is None
    assert st.get(INVOICES, params={"jobId": job["id"]}).json()["data"] == []


def _drive_office(handle: SandboxHandle, ticks: int) -> None:
    for _ in range(ticks):
        handle.office_tick()


def test_office_works_most_bookings_into_completed_jobs(st: TenantClient, sandbox: SandboxHandle) -> None:
    sandbox.office(seed=7, dismiss_rate=0.1, accept_only_rate=0.05, cancel_rate=0.1)
    for i in range(40):
        st.create_booking(f"R-{i}")
    _drive_office(sandbox, 7)  # New→Accepted→Converted, then Scheduled→…→Completed
    report = sandbox.inspect(st.creds.tenant_id)
    by_status = report["bookings_by_status"]
    assert set(by_status) <= {"Dismissed", "Accepted", "Converted"}
    assert by_status.get("Converted", 0) >= 28 and by_status.get("Dismissed", 0) >= 1
    jobs = report["jobs_by_status"]
    assert set(jobs) <= {"Completed", "Canceled"} and jobs.get("Completed", 0) >= 20 and jobs.get("Canceled", 0) >= 1
    invoices = st.get(INVOICES, params={"pageSize": 100}).json()["data"]
    assert len(invoices) == jobs["Completed"]
    assert all(150 <= float(i["total"]) <= 2500 for i in invoices)


def test_office_is_reproducible_for_a_seed(st: TenantClient, sandbox: SandboxHandle) -> None:
    def run() -> tuple[object, object, list[str]]:
        sandbox.reset()
        st.token = st.fetch_token()
        sandbox.office(seed=11)
        for i in range(15):
            st.create_booking(f"R-{i}")
        _drive_office(sandbox, 6)
        report = sandbox.inspect(st.creds.tenant_id)
        totals = [i["total"] for i in st.get(INVOICES).json()["data"]]
        return report["bookings_by_status"], report["jobs_by_status"], totals

    assert run() == run()


@pytest.mark.timeout(30)
def test_office_runs_in_the_background_at_its_pace(st: TenantClient, sandbox: SandboxHandle) -> None:
    booking = st.create_booking("R-1")
    sandbox.office(enabled=True, pace_s=0.05, seed=1, dismiss_rate=0, accept_only_rate=0, cancel_rate=0)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        job_id = st.get(BOOKINGS + f"/{booking['id']}").json()["jobId"]
        status = st.get(JOBS + f"/{job_id}").json()["jobStatus"] if job_id else None
        if status == "Completed":
            break
        time.sleep(0.05)
    sandbox.office(enabled=False)
    assert status == "Completed"
