"""The SIGKILL-between-request-and-write-back tests (ServiceTitan and Housecall Pro): a worker process killed
once its write has reached the sandbox, the state it leaves, and reconcile adopting what it created."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from integration_core.delivery.engine import deliver_batch, reconcile
from tests.support.config import TEST_SECRET_KEY
from tests.support.delivery import run
from tests.support.world import statuses

ROOT = Path(__file__).resolve().parents[2]


def kill_worker_once_sent(database_url: str, company: uuid.UUID, sent: Callable[[], bool]) -> None:
    """Start ``tests.delivery._crash_worker`` for ``company`` and SIGKILL it as soon as ``sent()`` (the sandbox
    holds a record: the request has left); fails if it exits first or nothing arrives within 30 s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.delivery._crash_worker", database_url, str(company)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SECRET_KEY": TEST_SECRET_KEY},
    )
    try:
        deadline = time.monotonic() + 30
        while not sent():
            assert proc.poll() is None, "worker exited before sending"
            assert time.monotonic() < deadline, "the request never reached the sandbox"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()


def assert_left_in_flight(db: Engine) -> None:
    """Check, send, mark: the attempt was committed (and a lookup demanded) before the request left."""
    with db.connect() as conn:
        row = conn.execute(text("SELECT status, lookup_required, lease_owner FROM job_routings")).one()
        attempt: str = conn.execute(text("SELECT outcome FROM sync_attempts")).scalar_one()
    assert (row.status, row.lookup_required, row.lease_owner, attempt) == ("claimed", True, "doomed-run", "in_flight")


def assert_reconcile_adopts(db: Engine, database_url: str, engine_settings: Any, company: uuid.UUID) -> None:
    """A fresh batch leaves the leased routing alone; once its lease expired, reconcile adopts the record and the
    routing ends synced with nothing left to deliver."""
    assert run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-2")).claimed == 0
    # time passes (the clock is the only thing we fake)
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET lease_expires_at = now() - interval '1 second'"))
    rec = run(database_url, lambda e: reconcile(e, engine_settings, "reconcile"))
    assert rec.expired_leases == 1 and rec.outcomes["adopted"] == 1
    after = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-3"))
    assert after.claimed == 0
    assert statuses(db) == {"synced": 1}
