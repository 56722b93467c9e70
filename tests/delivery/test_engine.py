"""The delivery engine against real PostgreSQL and the sandbox over HTTP (no mocks of our code)."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from integration_core.delivery.claims import claim
from integration_core.delivery.engine import deliver_batch, drain, reconcile
from tests.support.delivery import run
from tests.support.sandbox import sandbox_marker_counts
from tests.support.world import add_receiver, add_routings, statuses


@pytest.mark.parametrize("mode", ["booking", "job"])
def test_batch_delivers_each_routing_exactly_once(db, database_url, engine_settings, sandbox, world, mode) -> None:
    company, tenant = add_receiver(db, sandbox, mode=mode)
    ids = add_routings(db, world, company, 12)

    summary = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-1", limit=50))

    assert summary.claimed == 12 and summary.outcomes["synced"] == 12, dict(summary.outcomes)
    assert statuses(db) == {"synced": 12}
    counts = sandbox_marker_counts(sandbox, tenant, mode)
    assert counts == {str(i): 1 for i in ids}
    assert len(summary.latencies) == 12 and summary.percentile(0.5) is not None
    with db.connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT external_id, external_refs, delivery_mode, synced_at, lease_owner, "
                    "lookup_required FROM job_routings"
                )
            )
            .mappings()
            .all()
        )
        attempts = (
            conn.execute(text("SELECT operation, outcome, run_id, finished_at IS NOT NULL AS done FROM sync_attempts"))
            .mappings()
            .all()
        )
    assert all(r["external_id"] and r["synced_at"] and r["lease_owner"] is None for r in rows)
    assert all(r["delivery_mode"] == mode and not r["lookup_required"] for r in rows)
    assert {r["external_refs"]["kind"] for r in rows} == {mode}
    assert [(a["operation"], a["outcome"], a["run_id"], a["done"]) for a in attempts] == [
        ("deliver", "synced", "run-1", True)
    ] * 12
    # a second run finds nothing to do
    again = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-2"))
    assert again.claimed == 0


def test_concurrent_claimers_never_share_a_routing(db, database_url, engine_settings, sandbox, world) -> None:
    company, _ = add_receiver(db, sandbox)
    add_routings(db, world, company, 60)

    async def body(engine):
        results = await asyncio.gather(
            *(claim(engine, company, owner=f"r{i}", limit=15, lease_seconds=30) for i in range(6))
        )
        return [c.id for batch in results for c in batch]

    claimed = run(database_url, body)
    assert len(claimed) == len(set(claimed)) == 60
    # a claim writes the lease only (delivery/claims.py): the routings are `claimed` once their run writes to them
    assert statuses(db) == {"pending": 60}
    with db.connect() as conn:
        leased = dict(
            conn.execute(text("SELECT id, lease_owner FROM job_routings WHERE lease_expires_at > now()")).all()
        )
        receipts = {
            (owner, rid)
            for owner, ids in conn.execute(text("SELECT owner, routing_ids FROM routing_claims")).all()
            for rid in ids
        }
    assert set(leased) == set(claimed)
    assert receipts == {(owner, rid) for rid, owner in leased.items()}  # each routing on its owner's receipt only


def test_fencing_a_run_that_lost_its_lease_changes_nothing(db, database_url, engine_settings, sandbox, world) -> None:
    company, tenant = add_receiver(db, sandbox)
    [rid] = add_routings(db, world, company, 1)

    async def body(engine):
        from sqlalchemy.ext.asyncio import AsyncSession

        from integration_core.delivery.connections import enabled_connection, open_connection
        from integration_core.delivery.engine import BatchSummary, _Batch

        [c] = await claim(engine, company, owner="slow-run", limit=1, lease_seconds=30)
        # meanwhile reconcile (or another run) takes the routing over: the version moves on
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE job_routings SET lease_version = lease_version + 1, "
                    "status = 'needs_reconcile', lookup_required = true WHERE id = :id"
                ),
                {"id": rid},
            )
        async with AsyncSession(engine) as s:
            row = await enabled_connection(s, company)
        assert row is not None
        live = open_connection(engine, row, engine_settings)
        summary = BatchSummary(company_id=company, run_id="slow-run")
        try:
            await _Batch(engine, engine_settings, live, summary, random.Random(1)).process(c)
        finally:
            await live.aclose()
        return summary

    summary = run(database_url, body)
    assert summary.outcomes["lease_lost"] == 1
    assert statuses(db) == {"needs_reconcile": 1}
    assert sandbox.inspect(tenant)["records"]["bookings"] == 0  # the stale run never sent


def test_permanent_error_fails_with_the_providers_message(db, database_url, engine_settings, sandbox, world) -> None:
    company, _ = add_receiver(db, sandbox)
    with db.begin() as conn:  # a booking provider the tenant does not have: ServiceTitan answers 404
        conn.execute(text("UPDATE provider_connections SET settings = settings || '{\"booking_provider_id\": 999999}'"))
    [rid] = add_routings(db, world, company, 1)

    summary = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run"))

    assert summary.outcomes["failed"] == 1 and summary.terminal_failures == 1
    [failure] = summary.failures
    assert failure.routing_id == rid and failure.message
    with db.connect() as conn:
        row = conn.execute(text("SELECT status, last_error_code, last_error_message FROM job_routings")).one()
    assert row.status == "failed" and row.last_error_code and row.last_error_message
    assert "Homeowner" not in row.last_error_message and "@example.com" not in row.last_error_message


def test_5xx_on_create_is_unknown_outcome_then_reconcile_adopts(
    db, database_url, engine_settings, sandbox, world
) -> None:
    company, tenant = add_receiver(db, sandbox)
    sandbox.put_faults(tenant, seed=1, commit_then_fail_rate=1.0)
    [rid] = add_routings(db, world, company, 1)

    first = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-1"))
    assert first.outcomes["needs_reconcile"] == 1
    assert statuses(db) == {"needs_reconcile": 1}

    sandbox.put_faults(tenant, seed=1)
    rec = run(database_url, lambda e: reconcile(e, engine_settings, "reconcile-1"))
    assert rec.outcomes["adopted"] == 1
    assert statuses(db) == {"synced": 1}
    assert sandbox_marker_counts(sandbox, tenant, "booking") == {str(rid): 1}


def test_dropped_connection_then_batch_looks_up_before_resending(
    db, database_url, engine_settings, sandbox, world
) -> None:
    company, tenant = add_receiver(db, sandbox, mode="job")
    sandbox.put_faults(tenant, seed=2, commit_then_fail_rate=1.0, commit_then_fail_mode="drop")
    ids = add_routings(db, world, company, 3)
    run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-1"))
    assert statuses(db) == {"needs_reconcile": 3}

    sandbox.put_faults(tenant, seed=2)
    second = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-2"))
    # the first write of job mode is the customer: it exists, so the retry reuses it
    assert second.outcomes["adopted"] + second.outcomes["synced"] == 3
    assert sandbox_marker_counts(sandbox, tenant, "job") == {str(i): 1 for i in ids}
    records = sandbox.inspect(tenant)["records"]
    # customers and locations carry no marker (ServiceTitan's definitions forbid externalData there): the retry
    # found the customer by the homeowner's phone and reused it
    assert (records["customers"], records["locations"], records["jobs"]) == (3, 3, 3)
    with db.connect() as conn:
        lookups = conn.execute(text("SELECT count(*) FROM sync_attempts WHERE operation = 'lookup'")).scalar()
    assert lookups == 3


def test_retryable_errors_back_off_and_exhaust_into_failed(db, database_url, engine_settings, sandbox, world) -> None:
    company, tenant = add_receiver(db, sandbox)
    # GETs fail (lookups are reads: nothing written, so Retryable)
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET lookup_required = true"))
    add_routings(db, world, company, 1)
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET lookup_required = true, attempts = 7"))
    sandbox.put_faults(tenant, seed=3, error_rate=1.0, applies_to="all")

    first = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-1"))
    assert first.outcomes["retry"] == 1
    with db.connect() as conn:
        row = conn.execute(
            text("SELECT status, next_attempt_at > now() AS later, lookup_required FROM job_routings")
        ).one()
    assert row.status == "pending" and row.lookup_required


def test_429_returns_routings_to_pending_after_retry_after_without_burning_attempts(
    db, database_url, engine_settings, sandbox, world
) -> None:
    company, tenant = add_receiver(db, sandbox)
    add_routings(db, world, company, 3)
    r = sandbox.control.post(f"/_sandbox/tenants/{tenant}/storm", json={"seconds": 30, "retry_after": 30})
    assert r.status_code == 200

    summary = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run"))

    assert summary.outcomes["rate_limited"] >= 1 and summary.throttled >= 1
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, attempts, extract(epoch FROM next_attempt_at - now()) AS wait, "
                "EXISTS (SELECT 1 FROM sync_attempts a WHERE a.routing_id = r.id AND a.outcome = 'rate_limited') "
                "AS throttled FROM job_routings r"
            )
        ).all()
        backoff = conn.execute(
            text("SELECT extract(epoch FROM backoff_until - now()) FROM provider_rate_limits WHERE account_id = :t"),
            {"t": tenant},
        ).scalar()
    assert all(r.status == "pending" and r.attempts == 0 for r in rows)
    # a routing answered 429 waits out Retry-After (30 s), not the backoff (seconds); one the run released before
    # its turn keeps its due time, and the account's backoff (below) holds it back
    assert any(r.throttled for r in rows)
    assert all(r.wait > 20 for r in rows if r.throttled), rows
    assert backoff > 20


def test_auth_failure_marks_connection_unhealthy_and_stops_the_batch(
    db, database_url, engine_settings, sandbox, world
) -> None:
    company, _ = add_receiver(db, sandbox, client_secret="cs1.wrong-secret")
    add_routings(db, world, company, 5)

    summary = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run"))

    assert summary.stopped and summary.stopped.startswith("auth_failed")
    assert summary.outcomes["synced"] == 0
    assert statuses(db) == {"pending": 5}
    with db.connect() as conn:
        health, error = conn.execute(text("SELECT health, last_error FROM provider_connections")).one()
        attempts = conn.execute(text("SELECT sum(attempts) FROM job_routings")).scalar()
    assert health == "unhealthy" and "wrong-secret" not in (error or "")
    assert attempts == 0


def test_expired_lease_is_reconciled_and_nothing_is_sent_twice(
    db, database_url, engine_settings, sandbox, world
) -> None:
    company, tenant = add_receiver(db, sandbox)
    [rid] = add_routings(db, world, company, 1)
    delivered = run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run-1"))
    assert delivered.outcomes["synced"] == 1
    # pretend the run crashed after sending but before writing back
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE job_routings SET status = 'claimed', external_id = NULL, synced_at = NULL, "
                "lease_owner = 'dead-run', lease_expires_at = now() - interval '1 minute', "
                "lookup_required = true"
            )
        )
        conn.execute(
            text("INSERT INTO sync_attempts (routing_id, run_id, attempt_no) VALUES (:r, 'dead-run', 2)"), {"r": rid}
        )
    rec = run(database_url, lambda e: reconcile(e, engine_settings, "reconcile"))
    assert rec.expired_leases == 1 and rec.outcomes["adopted"] == 1
    again = run(database_url, lambda e: reconcile(e, engine_settings, "reconcile-2"))
    assert again.expired_leases == 0 and again.companies == 0
    assert statuses(db) == {"synced": 1}
    assert sandbox_marker_counts(sandbox, tenant, "booking") == {str(rid): 1}
    with db.connect() as conn:
        outcomes = conn.execute(text("SELECT outcome FROM sync_attempts ORDER BY id")).scalars().all()
    assert outcomes == ["synced", "abandoned", "adopted"]


def test_drain_keeps_going_while_there_is_work(db, database_url, engine_settings, sandbox, world) -> None:
    company, tenant = add_receiver(db, sandbox)
    add_routings(db, world, company, 45)
    summary = run(database_url, lambda e: drain(e, engine_settings, company, "run", time_budget_seconds=60, limit=10))
    assert summary.outcomes["synced"] == 45 and summary.claimed == 45
    assert sandbox.inspect(tenant)["records"]["bookings"] == 45


def test_an_idle_run_lingers_and_picks_up_new_work(db, database_url, engine_settings, sandbox, world) -> None:
    company, tenant = add_receiver(db, sandbox)
    add_routings(db, world, company, 2)

    async def body(engine):
        async def late_referral() -> None:
            # once the first two are delivered (the run is idle and lingering), however long that took
            for _ in range(300):
                if await asyncio.to_thread(lambda: sandbox.inspect(tenant)["records"]["bookings"]) >= 2:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(add_routings, db, world, company, 1)

        results = await asyncio.gather(
            drain(engine, engine_settings, company, "run", time_budget_seconds=60, idle_seconds=8, poll_seconds=0.2),
            late_referral(),
        )
        return results[0]

    summary = run(database_url, body)
    assert summary.outcomes["synced"] == 3  # the late one too, by the same run
    assert sandbox.inspect(tenant)["records"]["bookings"] == 3
    assert summary.elapsed_seconds >= 8  # it waited for work before ending

    quick = run(
        database_url,
        lambda e: drain(
            e,
            engine_settings,
            company,
            "run-2",
            time_budget_seconds=30,
            idle_seconds=10,
            poll_seconds=0.2,
            keep_waiting=lambda: False,
        ),
    )
    assert quick.claimed == 0 and quick.elapsed_seconds < 9  # others need the slot: no lingering (idle is 10 s)

    # others need the slot, but a routing of this company is due in 2 s (a backoff, a lookup after a lost
    # request): leaving would cost a new run and its wait in the queue, so the run waits for it
    [later] = add_routings(db, world, company, 1)
    with db.begin() as conn:
        conn.execute(
            text("UPDATE job_routings SET next_attempt_at = now() + interval '2 seconds' WHERE id = :id"), {"id": later}
        )
    waited = run(
        database_url,
        lambda e: drain(
            e,
            engine_settings,
            company,
            "run-3",
            time_budget_seconds=30,
            idle_seconds=10,
            poll_seconds=0.2,
            keep_waiting=lambda: False,
        ),
    )
    assert waited.claimed == 1 and waited.outcomes["synced"] == 1 and waited.elapsed_seconds < 9

    # the scheduler cannot say (its database restarting): the run ends as if its slot were wanted, not failed
    add_routings(db, world, company, 1)

    def scheduler_down() -> bool:
        raise OperationalError("SELECT count(*) FROM runs", {}, Exception("the database system is shutting down"))

    unsure = run(
        database_url,
        lambda e: drain(
            e,
            engine_settings,
            company,
            "run-4",
            time_budget_seconds=30,
            idle_seconds=10,
            poll_seconds=0.2,
            keep_waiting=scheduler_down,
        ),
    )
    assert unsure.outcomes["synced"] == 1 and not unsure.stopped and unsure.elapsed_seconds < 9
