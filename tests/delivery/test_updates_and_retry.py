"""Status and revenue pull, and the dead-letter retry."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import Engine, RowMapping, text

from integration_core.db.engine import session_scope
from integration_core.delivery.engine import deliver_batch
from integration_core.delivery.retry import retry_failed
from integration_core.delivery.updates import pull_updates
from integration_core.errors import InvalidInput
from tests.support.delivery import run
from tests.support.world import add_receiver, add_routings, statuses


def _routing_rows(db: Engine) -> Sequence[RowMapping]:
    with db.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT r.id, r.external_id, r.external_refs, r.external_status, r.revenue, r.completed_at, "
                    "j.status AS job_status, j.completed_at AS job_completed_at FROM job_routings r "
                    "JOIN jobs j ON j.id = r.job_id ORDER BY r.sequence"
                )
            )
            .mappings()
            .all()
        )


def test_booking_converted_then_completed_writes_status_revenue_and_job(
    db, database_url, engine_settings, sandbox, world
) -> None:
    company, tenant = add_receiver(db, sandbox)
    add_routings(db, world, company, 3)
    assert run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run")).outcomes["synced"] == 3
    first, second, third = _routing_rows(db)

    c = sandbox.control
    base = f"/_sandbox/tenants/{tenant}"
    converted = c.post(f"{base}/bookings/{first['external_id']}/advance", json={"status": "Converted"}).json()
    job_id = converted["job"]["id"]
    for status in ("Dispatched", "InProgress"):
        assert c.post(f"{base}/jobs/{job_id}/advance", json={"status": status}).status_code == 200
    done = c.post(f"{base}/jobs/{job_id}/advance", json={"status": "Completed", "invoice_total": 480.5})
    assert done.status_code == 200, done.text
    assert c.post(f"{base}/bookings/{second['external_id']}/advance", json={"status": "Dismissed"}).status_code == 200
    assert c.post(f"{base}/bookings/{third['external_id']}/advance", json={"status": "Accepted"}).status_code == 200

    summary = run(database_url, lambda e: pull_updates(e, engine_settings, company))
    assert summary.error is None and summary.routings_updated >= 3

    first, second, third = _routing_rows(db)
    assert first["external_status"] == "completed" and first["revenue"] == Decimal("480.50")
    assert first["completed_at"] is not None and str(first["external_refs"].get("job_id")) == str(job_id)
    assert first["job_status"] == "completed" and first["job_completed_at"] is not None
    assert second["external_status"] == "dismissed" and second["job_status"] == "canceled"
    assert third["external_status"] == "accepted" and third["job_status"] == "routed"
    with db.connect() as conn:
        cursor = conn.execute(text("SELECT updates_cursor FROM provider_connections")).scalar()
    assert cursor is not None

    # pulling again changes nothing (updates are idempotent; the lookback re-reads a few minutes)
    again = run(database_url, lambda e: pull_updates(e, engine_settings, company))
    assert again.error is None
    assert _routing_rows(db) == [first, second, third]


def test_job_mode_completion_is_pulled(db, database_url, engine_settings, sandbox, world) -> None:
    company, tenant = add_receiver(db, sandbox, mode="job")
    add_routings(db, world, company, 1)
    run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run"))
    [row] = _routing_rows(db)
    base = f"/_sandbox/tenants/{tenant}/jobs/{row['external_id']}/advance"
    for status in ("Dispatched", "InProgress"):
        sandbox.control.post(base, json={"status": status})
    sandbox.control.post(base, json={"status": "Completed", "invoice_total": 1234})
    run(database_url, lambda e: pull_updates(e, engine_settings, company))
    [row] = _routing_rows(db)
    assert (row["external_status"], row["revenue"], row["job_status"]) == ("completed", Decimal("1234.00"), "completed")


def test_retry_returns_failed_routings_to_pending_and_audits(db, database_url, engine_settings, sandbox, world) -> None:
    company, _ = add_receiver(db, sandbox)
    with db.begin() as conn:
        conn.execute(text("UPDATE provider_connections SET settings = settings || '{\"booking_provider_id\": 999999}'"))
    ids = add_routings(db, world, company, 2)
    run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run"))
    assert statuses(db) == {"failed": 2}
    with db.connect() as conn:
        code = conn.execute(text("SELECT DISTINCT last_error_code FROM job_routings")).scalar()

    with session_scope(db) as session:
        try:
            retry_failed(session, actor="test")
        except InvalidInput:
            pass
        else:
            raise AssertionError("retry without a filter must be refused")
        assert retry_failed(session, error_code="no-such-code", actor="test") == []
        assert sorted(retry_failed(session, error_code=code, actor="ops", reason="fixed BP")) == sorted(ids)
    assert statuses(db) == {"pending": 2}

    with db.connect() as conn:
        audit = (
            conn.execute(text("SELECT actor, action, details FROM audit_log WHERE action = 'routings.retried'"))
            .mappings()
            .one()
        )
    assert audit["actor"] == "ops" and audit["details"]["count"] == 2 and audit["details"]["reason"] == "fixed BP"
