"""Housecall Pro through the engine: delivered leads and jobs, then the status pull writes status, completion and
revenue back (the lead's status follows the job the office converted it into)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import Engine, RowMapping, text

from integration_core.delivery.engine import deliver_batch
from integration_core.delivery.updates import pull_updates
from tests.support.delivery import run
from tests.support.housecallpro import HcpSandbox, hcp, hcp_sandbox_url  # noqa: F401
from tests.support.housecallpro_client import add_hcp_receiver
from tests.support.world import add_routings


def _rows(db: Engine) -> Sequence[RowMapping]:
    with db.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT r.id, r.external_id, r.external_refs, r.external_status, r.revenue, r.completed_at, "
                    "j.status AS job_status FROM job_routings r JOIN jobs j ON j.id = r.job_id ORDER BY r.sequence"
                )
            )
            .mappings()
            .all()
        )


def test_lead_converted_completed_and_lost(db, database_url, engine_settings, hcp: HcpSandbox, world) -> None:  # noqa: F811
    company, account = add_hcp_receiver(db, hcp, mode="lead")
    add_routings(db, world, company, 2)
    assert run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run")).outcomes["synced"] == 2
    won, lost = _rows(db)
    assert won["external_refs"]["kind"] == "lead" and won["external_id"].startswith("lead")

    job = hcp.advance_lead(account.company_id, won["external_id"], "won")["job"]
    hcp.advance_lead(account.company_id, lost["external_id"], "lost")
    summary = run(database_url, lambda e: pull_updates(e, engine_settings, company))
    assert summary.error is None and summary.routings_updated >= 2, summary
    won, lost = _rows(db)
    assert (won["external_status"], lost["external_status"]) == ("new", "dismissed")
    assert lost["job_status"] == "canceled"  # its only routing was dismissed

    for status in ("scheduled", "in_progress"):
        hcp.advance_job(account.company_id, job["id"], status)
    hcp.advance_job(account.company_id, job["id"], "completed", invoice_total=880.25)
    summary = run(database_url, lambda e: pull_updates(e, engine_settings, company))
    assert summary.error is None, summary
    won, _ = _rows(db)
    assert won["external_status"] == "completed" and won["revenue"] == Decimal("880.25")
    assert won["completed_at"] is not None and won["job_status"] == "completed"
    assert won["external_refs"]["job_id"] == job["id"]


def test_job_mode_status_and_revenue(db, database_url, engine_settings, hcp: HcpSandbox, world) -> None:  # noqa: F811
    company, account = add_hcp_receiver(db, hcp, mode="job")
    add_routings(db, world, company, 1)
    assert run(database_url, lambda e: deliver_batch(e, engine_settings, company, "run")).outcomes["synced"] == 1
    [row] = _rows(db)
    assert row["external_refs"]["kind"] == "job"
    for status in ("scheduled", "in_progress"):
        hcp.advance_job(account.company_id, row["external_id"], status)
    done = hcp.advance_job(account.company_id, row["external_id"], "completed", invoice_total=150)
    hcp.pay_invoice(account.company_id, done["invoice"]["id"])
    summary = run(database_url, lambda e: pull_updates(e, engine_settings, company))
    assert summary.error is None, summary
    [row] = _rows(db)
    assert (row["external_status"], row["revenue"], row["job_status"]) == ("completed", Decimal("150.00"), "completed")
