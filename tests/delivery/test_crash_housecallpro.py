"""Housecall Pro: SIGKILL right after the lead/job request left and before the write-back; reconcile adopts the
record the request created (found by its marker tag): still exactly one lead or job at Housecall Pro."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from integration_core.delivery.engine import deliver_batch, reconcile
from tests.support.config import TEST_SECRET_KEY
from tests.support.delivery import run
from tests.support.housecallpro import HcpSandbox, hcp, hcp_sandbox_url  # noqa: F401
from tests.support.housecallpro_client import add_hcp_receiver, hcp_delivered
from tests.support.world import add_routings, statuses

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["lead", "job"])
def test_sigkill_between_request_and_write_back(
    db,
    database_url,
    engine_settings,
    hcp: HcpSandbox,  # noqa: F811
    world,
    mode,
) -> None:
    company, account = add_hcp_receiver(db, hcp, mode=mode)
    [rid] = add_routings(db, world, company, 1)
    # the homeowner is already a customer at the service address (as add_routings writes referral #1), so the
    # lead or job is the delivery's one write
    existing = httpx.post(
        f"{hcp.url}/customers",
        headers={"Authorization": f"Token {account.api_key}"},
        json={
            "first_name": "Homeowner",
            "last_name": "1",
            "mobile_number": "3105550001",
            "addresses": [
                {"street": "1 Elm St", "city": "Beverly Hills", "state": "CA", "zip": "90210", "country": "USA"}
            ],
        },
        timeout=10,
    )
    assert existing.status_code == 201, existing.text
    # the sandbox commits the write, then holds the response: the request has left, no answer comes back
    hcp.put_faults(account.company_id, seed=5, timeout_rate=1.0, timeout_s=30, timeout_commits=True)
    record = "leads" if mode == "lead" else "jobs"

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.delivery._crash_worker", database_url, str(company)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SECRET_KEY": TEST_SECRET_KEY},
    )
    try:
        deadline = time.monotonic() + 30
        while hcp.inspect(account.company_id)["records"][record] == 0:
            assert proc.poll() is None, "worker exited before sending"
            assert time.monotonic() < deadline, "the request never reached the sandbox"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    with db.connect() as conn:
        row = conn.execute(text("SELECT status, lookup_required, lease_owner FROM job_routings")).one()
        attempt = conn.execute(text("SELECT outcome FROM sync_attempts")).scalar_one()
    # check, send, mark: the attempt was committed (and a lookup demanded) before the request left
    assert (row.status, row.lookup_required, row.lease_owner, attempt) == ("claimed", True, "doomed-run", "in_flight")

    hcp.clear_faults(account.company_id)
    # a fresh batch does not touch the leased routing; time passes (the clock is the only thing we fake)
    assert run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-2")).claimed == 0
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET lease_expires_at = now() - interval '1 second'"))
    rec = run(database_url, lambda e: reconcile(e, engine_settings, "reconcile"))
    assert rec.expired_leases == 1 and rec.outcomes["adopted"] == 1
    after = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-3"))
    assert after.claimed == 0
    assert statuses(db) == {"synced": 1}
    assert hcp_delivered(hcp, account.company_id, mode) == {str(rid): 1}
    assert hcp.inspect(account.company_id)["records"]["customers"] == 1
