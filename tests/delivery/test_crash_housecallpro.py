"""Housecall Pro: SIGKILL right after the lead/job request left and before the write-back; reconcile adopts the
record the request created (found by its marker tag): still exactly one lead or job at Housecall Pro."""

from __future__ import annotations

import httpx
import pytest

from tests.support.crash import assert_left_in_flight, assert_reconcile_adopts, kill_worker_once_sent
from tests.support.housecallpro import HcpSandbox, hcp, hcp_sandbox_url  # noqa: F401
from tests.support.housecallpro_client import add_hcp_receiver, hcp_delivered
from tests.support.world import add_routings


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

    kill_worker_once_sent(database_url, company, lambda: hcp.inspect(account.company_id)["records"][record] > 0)
    assert_left_in_flight(db)

    hcp.clear_faults(account.company_id)
    assert_reconcile_adopts(db, database_url, engine_settings, company)
    assert hcp_delivered(hcp, account.company_id, mode) == {str(rid): 1}
    assert hcp.inspect(account.company_id)["records"]["customers"] == 1
