"""SIGKILL right after the request left and before the write-back: still exactly one record at the provider."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from integration_core.delivery.engine import deliver_batch, reconcile
from tests.support.config import TEST_SECRET_KEY
from tests.support.delivery import run
from tests.support.sandbox import sandbox_marker_counts
from tests.support.world import add_receiver, add_routings, statuses

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_between_request_and_write_back(db, database_url, engine_settings, sandbox, world) -> None:
    company, tenant = add_receiver(db, sandbox)
    # the sandbox commits the booking, then holds the response: the request has left, no answer comes back
    sandbox.put_faults(tenant, seed=5, timeout_rate=1.0, timeout_s=30, timeout_commits=True)
    [rid] = add_routings(db, world, company, 1)

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.delivery._crash_worker", database_url, str(company)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SECRET_KEY": TEST_SECRET_KEY},
    )
    try:
        deadline = time.monotonic() + 30
        while sandbox.inspect(tenant)["records"]["bookings"] == 0:
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

    sandbox.put_faults(tenant, seed=5)
    # a fresh batch does not touch the leased routing; time passes (the clock is the only thing we fake)
    assert run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-2")).claimed == 0
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET lease_expires_at = now() - interval '1 second'"))
    rec = run(database_url, lambda e: reconcile(e, engine_settings, "reconcile"))
    assert rec.expired_leases == 1 and rec.outcomes["adopted"] == 1
    after = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-3"))
    assert after.claimed == 0
    assert statuses(db) == {"synced": 1}
    assert sandbox_marker_counts(sandbox, tenant, "booking") == {str(rid): 1}
