"""SIGKILL right after the request left and before the write-back: still exactly one record at the provider."""

from __future__ import annotations

from tests.support.crash import assert_left_in_flight, assert_reconcile_adopts, kill_worker_once_sent
from tests.support.sandbox import sandbox_marker_counts
from tests.support.world import add_receiver, add_routings


def test_sigkill_between_request_and_write_back(db, database_url, engine_settings, sandbox, world) -> None:
    company, tenant = add_receiver(db, sandbox)
    # the sandbox commits the booking, then holds the response: the request has left, no answer comes back
    sandbox.put_faults(tenant, seed=5, timeout_rate=1.0, timeout_s=30, timeout_commits=True)
    [rid] = add_routings(db, world, company, 1)

    kill_worker_once_sent(database_url, company, lambda: sandbox.inspect(tenant)["records"]["bookings"] > 0)
    assert_left_in_flight(db)

    sandbox.put_faults(tenant, seed=5)
    assert_reconcile_adopts(db, database_url, engine_settings, company)
    assert sandbox_marker_counts(sandbox, tenant, "booking") == {str(rid): 1}
