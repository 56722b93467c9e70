"""Leases end with their run: a run gives back what it holds however it ends, and a dead worker costs seconds.

Real PostgreSQL, the real sandbox over loopback; what is faked is only the clock (by moving timestamps) and the
wire (the sandbox's faults)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from dagster._core.launcher.base import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from integration_core.delivery.claims import claim
from integration_core.delivery.engine import deliver_batch, drain, lease_seconds
from integration_core.delivery.leases import RECEIPT_SECONDS, expire_leases, release_run
from integration_core.delivery.runs import run_with_leases
from integration_core.settings import Settings
from pipelines.launcher import HOST_TAG, PID_TAG, WarmForkRunLauncher, _host
from tests.support.config import TEST_SECRET_KEY
from tests.support.delivery import run
from tests.support.sandbox import SandboxHandle, sandbox_marker_counts
from tests.support.world import World, add_receiver, add_routings, statuses

ROOT = Path(__file__).resolve().parents[2]


def _routings(db: Engine) -> dict[uuid.UUID, dict[str, object]]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, status, attempts, lookup_required, lease_owner, lease_version, "
                "extract(epoch FROM next_attempt_at - now()) AS due_in FROM job_routings"
            )
        ).mappings()
        return {r["id"]: dict(r) for r in rows}


def _attempt_outcomes(db: Engine) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT outcome FROM sync_attempts ORDER BY id"))]


def _wait_for_requests(
    sandbox: SandboxHandle, tenant: str, n: int, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + 30
    while sandbox.inspect(tenant)["records"]["bookings"] < n:
        assert proc is None or proc.poll() is None, "the worker exited before sending"
        assert time.monotonic() < deadline, "the requests never reached the sandbox"
        time.sleep(0.02)


def test_release_run_sends_never_sent_back_to_pending_and_maybe_sent_to_reconcile(
    db: Engine, database_url: str, engine_settings: Settings, sandbox: SandboxHandle, world: World
) -> None:
    company, _ = add_receiver(db, sandbox)
    sent, kept, other = add_routings(db, world, company, 3)

    async def body(engine: AsyncEngine) -> None:
        await claim(engine, company, owner="run-a", limit=2, lease_seconds=300)
        await claim(engine, company, owner="run-b", limit=1, lease_seconds=300)

    run(database_url, body)
    with db.begin() as conn:  # run-a recorded its delivery attempt of `sent` (now `claimed`): the request may have left
        conn.execute(
            text("UPDATE job_routings SET status = 'claimed', attempts = 1, lookup_required = true WHERE id = :id"),
            {"id": sent},
        )
        conn.execute(
            text(
                "INSERT INTO sync_attempts (routing_id, run_id, attempt_no, operation) "
                "VALUES (:id, 'run-a', 1, 'deliver')"
            ),
            {"id": sent},
        )
    before = _routings(db)
    assert before[other]["lease_owner"] == "run-b"

    with db.begin() as conn:
        released = release_run(
            conn, "run-a", holder_stopped=True, request_timeout_seconds=20, reconcile_delay_seconds=2
        )
    assert (released.to_pending, released.to_reconcile, released.attempts_abandoned) == (1, 1, 1)
    after = _routings(db)
    assert after[sent]["status"] == "needs_reconcile" and after[sent]["lookup_required"] is True
    # not looked up before the request could still be landing: one request timeout (+ the reconcile delay)
    assert 20 < float(after[sent]["due_in"]) <= 22  # type: ignore[arg-type]
    assert after[kept]["status"] == "pending" and after[kept]["attempts"] == 0
    assert after[kept]["lookup_required"] is False and float(after[kept]["due_in"]) <= 0  # type: ignore[arg-type]
    for rid in (sent, kept):  # fenced: a late write-back of run-a finds a new lease version
        assert after[rid]["lease_owner"] is None
        assert after[rid]["lease_version"] == before[rid]["lease_version"] + 1  # type: ignore[operator]
    assert after[other] == before[other] | {"due_in": after[other]["due_in"]}  # another run's lease untouched
    assert _attempt_outcomes(db) == ["abandoned"]

    # a holder that may still be alive: what may have been sent waits until its lease has run out
    with db.begin() as conn:
        held = release_run(conn, "run-b", holder_stopped=False, request_timeout_seconds=20, reconcile_delay_seconds=2)
    assert (held.to_pending, held.to_reconcile) == (1, 0)
    with db.begin() as conn:  # nothing left to release: a second call changes nothing
        again = release_run(conn, "run-a", holder_stopped=True, request_timeout_seconds=20, reconcile_delay_seconds=2)
    assert again.total == 0
    with db.connect() as conn:  # each release took its owner's receipts with it
        assert conn.execute(text("SELECT count(*) FROM routing_claims")).scalar_one() == 0


def test_receipts_of_owners_nobody_releases_go_once_they_hold_nothing(
    db: Engine, database_url: str, engine_settings: Settings, sandbox: SandboxHandle, world: World
) -> None:
    """An owner that is no Dagster run (or a lost host's run) is never released: lease expiry drops its receipts
    once they are older than RECEIPT_SECONDS and their routings are no longer leased by it."""
    company, _ = add_receiver(db, sandbox)
    lapsed, *_ = add_routings(db, world, company, 3)  # claimed in this order by lapsed, live, fresh

    async def body(engine: AsyncEngine) -> None:
        for owner in ("lapsed", "live", "fresh"):
            await claim(engine, company, owner=owner, limit=1, lease_seconds=300)

    run(database_url, body)
    with db.begin() as conn:  # two receipts are old; the lapsed one's lease ran out long ago
        conn.execute(
            text("UPDATE routing_claims SET claimed_at = now() - make_interval(secs => :s) WHERE owner <> 'fresh'"),
            {"s": RECEIPT_SECONDS + 60},
        )
        conn.execute(
            text("UPDATE job_routings SET lease_expires_at = now() - interval '1 minute' WHERE id = :i"), {"i": lapsed}
        )
        assert expire_leases(conn) == []  # nothing had been started: nothing to reconcile
    with db.connect() as conn:
        owners = {r[0] for r in conn.execute(text("SELECT owner FROM routing_claims"))}
    assert owners == {"live", "fresh"}
    assert statuses(db, company) == {"pending": 3}
    # the lapsed routing is due again for anyone; the live one is not
    taken = run(database_url, lambda e: claim(e, company, owner="next", limit=3, lease_seconds=300))
    assert [c.id for c in taken] == [lapsed]


def test_a_run_that_raises_mid_batch_leaves_nothing_claimed(
    db: Engine, database_url: str, engine_settings: Settings, sandbox: SandboxHandle, world: World
) -> None:
    company, tenant = add_receiver(db, sandbox, rate=5)
    # every request is committed by the sandbox, then held: the run is busy when it raises
    sandbox.put_faults(tenant, seed=3, timeout_rate=1.0, timeout_s=30, timeout_commits=True)
    add_routings(db, world, company, 20)

    async def body(engine: AsyncEngine, settings: Settings) -> None:
        async def explode() -> None:
            async with httpx.AsyncClient(base_url=sandbox.url) as control:
                for _ in range(1500):
                    if (await control.get(f"/_sandbox/tenants/{tenant}/inspect")).json()["records"]["bookings"] >= 2:
                        raise RuntimeError("the run failed for a reason of its own")
                    await asyncio.sleep(0.02)
            raise AssertionError("the requests never reached the sandbox")

        await asyncio.gather(
            drain(engine, settings, company, "run-x", time_budget_seconds=60, rng=random.Random(1)), explode()
        )

    settings = engine_settings.model_copy(update={"delivery_request_timeout_seconds": 60.0})
    with pytest.raises(RuntimeError, match="reason of its own"):
        run_with_leases(settings, "run-x", body)

    rows = _routings(db)
    assert not [r for r in rows.values() if r["status"] == "claimed" or r["lease_owner"] is not None]
    reconcile = [r for r in rows.values() if r["status"] == "needs_reconcile"]
    pending = [r for r in rows.values() if r["status"] == "pending"]
    assert len(reconcile) >= 2 and len(reconcile) + len(pending) == 20  # the sent ones are looked up first
    assert all(r["lookup_required"] for r in reconcile)
    assert all(r["attempts"] == 0 for r in pending)  # never sent: no attempt counted
    assert "in_flight" not in _attempt_outcomes(db)

    sandbox.put_faults(tenant, seed=3)
    _deliver_the_rest_once_landed(db, database_url, engine_settings, sandbox, company, tenant, 20)


def test_a_cancelled_run_gives_back_what_it_holds(
    db: Engine, database_url: str, engine_settings: Settings, sandbox: SandboxHandle, world: World
) -> None:
    """Cancel from the Dagster UI and SIGTERM reach a run worker as an interrupt in its main thread."""
    company, tenant = add_receiver(db, sandbox, rate=5)
    sandbox.put_faults(tenant, seed=4, timeout_rate=1.0, timeout_s=30, timeout_commits=True)
    add_routings(db, world, company, 40)  # more than DELIVERY_CONCURRENCY: some never get their turn
    proc = _worker(database_url, company, "run-cancelled")
    try:
        _wait_for_requests(sandbox, tenant, 1, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = _routings(db)
    assert not [r for r in rows.values() if r["status"] == "claimed" or r["lease_owner"] is not None]
    assert sum(r["status"] == "needs_reconcile" for r in rows.values()) >= 1
    assert sum(r["status"] == "pending" for r in rows.values()) >= 1


def test_a_dead_worker_is_released_as_soon_as_run_monitoring_looks(
    db: Engine, database_url: str, engine_settings: Settings, sandbox: SandboxHandle, world: World
) -> None:
    company, tenant = add_receiver(db, sandbox, rate=5)
    sandbox.put_faults(tenant, seed=5, timeout_rate=1.0, timeout_s=30, timeout_commits=True)
    add_routings(db, world, company, 10)
    run_id = str(uuid.uuid4())
    proc = _worker(database_url, company, run_id)
    try:
        _wait_for_requests(sandbox, tenant, 1, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    held = _routings(db).values()
    assert all(r["lease_owner"] == run_id for r in held)  # SIGKILL: nothing given back
    # started (a request out) → claimed; the rest leased and not written yet (a claim writes the lease only)
    assert sorted(str(r["status"]) for r in held) == ["claimed"] + ["pending"] * 9

    # run monitoring asks the launcher about the run's worker (every poll_interval_seconds in dagster.yaml)
    health = WarmForkRunLauncher().check_run_worker_health(
        DagsterRun(job_name="deliver_routings", run_id=run_id, tags={PID_TAG: str(proc.pid), HOST_TAG: _host()})
    )
    assert health.status == WorkerStatus.FAILED and "10 routing(s) it held released" in (health.msg or "")
    rows = _routings(db)
    assert not [r for r in rows.values() if r["status"] == "claimed" or r["lease_owner"] is not None]
    sent = [r for r in rows.values() if r["status"] == "needs_reconcile"]
    assert sent and all(r["lookup_required"] for r in sent)
    # the ones never sent are due at once for the next run; the sent ones after one request timeout
    assert all(float(r["due_in"]) <= 0 for r in rows.values() if r["status"] == "pending")  # type: ignore[arg-type]

    sandbox.put_faults(tenant, seed=5)
    _deliver_the_rest_once_landed(db, database_url, engine_settings, sandbox, company, tenant, 10)


def test_leases_are_short_and_no_longer_cover_the_batch(
    db: Engine, database_url: str, engine_settings: Settings, sandbox: SandboxHandle, world: World
) -> None:
    company, _ = add_receiver(db, sandbox, mode="job", rate=5)
    settings = engine_settings.model_copy(
        update={"delivery_lease_seconds": 60.0, "delivery_request_timeout_seconds": 20.0}
    )

    async def body(engine: AsyncEngine) -> tuple[float, float]:
        from sqlalchemy.ext.asyncio import AsyncSession

        from integration_core.delivery.connections import enabled_connection, open_connection

        async with AsyncSession(engine) as s:
            row = await enabled_connection(s, company)
        assert row is not None
        live = open_connection(engine, row, settings)
        try:
            return lease_seconds(settings, live, 10), lease_seconds(settings, live, 10_000)
        finally:
            await live.aclose()

    small, large = run(database_url, body)
    # a batch of 10,000 at 5 requests/s in job mode would need hours: the heartbeat renews, the lease stays short
    assert small == large == 60.0


def _deliver_the_rest_once_landed(
    db: Engine,
    database_url: str,
    settings: Settings,
    sandbox: SandboxHandle,
    company: uuid.UUID,
    tenant: str,
    total: int,
) -> None:
    """Once the requests that may have left can no longer be landing (the clock is what we fake), the next runs
    deliver everything — each routing exactly once at the provider."""
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET next_attempt_at = now() WHERE status = 'needs_reconcile'"))
    while run(database_url, lambda e: deliver_batch(e, settings, company, f"run-{uuid.uuid4()}")).claimed:
        pass
    assert statuses(db) == {"synced": total}
    assert set(sandbox_marker_counts(sandbox, tenant, "booking").values()) == {1}


def _worker(database_url: str, company: uuid.UUID, run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.delivery._run_worker", database_url, str(company), run_id],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SECRET_KEY": TEST_SECRET_KEY},
    )
