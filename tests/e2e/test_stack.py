"""End to end with the real daemon: POST /api/jobs/ → synced at the sandbox with no manual step; then the
sandbox completes the job and the scheduled pull writes `completed` + revenue back to the routing and the job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from integration_core.seed import demo_company_id, demo_technician_id
from integration_core.stack import LocalStack
from tests.conftest import TEST_API_TOKEN, TEST_SECRET_KEY

pytestmark = pytest.mark.slow


@pytest.fixture()
def stack(db, database_url: str, dagster_database_url: str, tmp_path: Path) -> Iterator[LocalStack]:
    env = {
        "DATABASE_URL": database_url,
        "DAGSTER_DATABASE_URL": dagster_database_url,
        "API_TOKEN": TEST_API_TOKEN,
        "SECRET_KEY": TEST_SECRET_KEY,
        "SANDBOX_OFFICE_ENABLED": "false",  # the test plays the office itself
        "PULL_UPDATES_CRON": "* * * * *",
        "SENSOR_INTERVAL_SECONDS": "2",
    }
    s = LocalStack(tmp_path / "stack", env)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _wait(fn, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_referral_is_delivered_and_followed_to_revenue(stack: LocalStack) -> None:
    api = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {TEST_API_TOKEN}"}, timeout=30)
    sandbox = httpx.Client(base_url=stack.sandbox_url, timeout=30)
    body = {
        "summary": "Water heater leaking in the garage",
        "address": {"street": "1 Canyon Dr", "city": "Beverly Hills", "state": "CA", "zip_code": "90210"},
        "homeowner": {"name": "Pat Doe", "phone": "310-555-0199"},
        "created_by_company_id": str(demo_company_id("handy-neighbors")),
        "created_by_technician_id": str(demo_technician_id("handy-neighbors")),
        "required_skills": ["water_heater"],
    }
    created = api.post("/api/jobs/", json=body, headers={"Idempotency-Key": "e2e-1"})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    routing_id = created.json()["routings"][0]["id"]
    assert created.json()["routings"][0]["receiving_company_id"] == str(demo_company_id("sunset-plumbing"))

    def synced():  # type: ignore[no-untyped-def]
        r = api.get(f"/api/routings/{routing_id}").json()
        return r if r["status"] == "synced" else None

    routing = _wait(synced, 90, "the routing to be synced by the sensor-launched run")
    tenant = "1001"  # Sunset Plumbing's sandbox tenant, booking mode
    info = sandbox.get(f"/_sandbox/tenants/{tenant}/inspect").json()
    assert info["markers"]["bookings"] == {routing_id: 1}

    base = f"/_sandbox/tenants/{tenant}"
    converted = sandbox.post(f"{base}/bookings/{routing['external_id']}/advance", json={"status": "Converted"})
    st_job = converted.json()["job"]["id"]
    for status in ("Dispatched", "InProgress"):
        sandbox.post(f"{base}/jobs/{st_job}/advance", json={"status": status}).raise_for_status()
    sandbox.post(f"{base}/jobs/{st_job}/advance", json={"status": "Completed", "invoice_total": 725}).raise_for_status()

    def completed():  # type: ignore[no-untyped-def]
        r = api.get(f"/api/routings/{routing_id}").json()
        return r if r["external_status"] == "completed" else None

    routing = _wait(completed, 150, "the scheduled status pull to write completion back")
    assert Decimal(routing["revenue"]) == Decimal("725.00") and routing["completed_at"]
    job = api.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["completed_at"]
