"""The daily reports on a fixed data set (tests/support/reports.py), every figure computed by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from integration_core.db.engine import session_scope
from integration_core.reports import (
    day_bounds,
    days_between,
    delivery_report,
    referral_outcomes,
    write_delivery_report,
    write_referral_outcomes,
)
from integration_core.reports.sla import failure_rate_verdict, latency_verdict
from integration_core.reports.store import read_report
from tests.support.reports import D1, D2, D3, TZ, D, ReportWorld, make_report_world


@pytest.fixture()
def world(db: Engine) -> ReportWorld:
    return make_report_world(db)


def _by_name(df: Any) -> dict[str, dict[str, Any]]:
    return {row["company_name"]: row for row in df.to_dict("records")}


def test_day_bounds_follow_the_reporting_time_zone() -> None:
    start, end = day_bounds(date(2026, 6, 10), "America/Los_Angeles")
    assert (start.hour, (end - start).total_seconds()) == (7, 86400)  # midnight in LA is 07:00 UTC in June
    start, end = day_bounds(date(2026, 3, 8), "America/Los_Angeles")  # DST starts: a 23-hour day
    assert (end - start).total_seconds() == 23 * 3600
    assert days_between(date(2026, 6, 1), date(2026, 6, 3)) == [date(2026, 6, d) for d in (1, 2, 3)]
    assert days_between(date(2026, 6, 3), date(2026, 6, 1)) == []


def test_delivery_report_of_a_full_day(db: Engine, world: ReportWorld) -> None:
    with session_scope(db) as session:
        rows = _by_name(delivery_report(session, D, TZ))
    assert set(rows) == {"Alpha Electric", "Beta Plumbing"}  # J5 (23:59:59 the day before) is not in D
    a, b = rows["Alpha Electric"], rows["Beta Plumbing"]
    # Alpha: J1 synced after 60 s, J2 (23:59:59, still D) after 120 s behind two 429s
    assert (a["routed"], a["synced"], a["failed"], a["still_open"], a["failure_rate"]) == (2, 2, 0, 0, 0.0)
    assert (a["routed_to_synced_p50_s"], a["routed_to_synced_p95_s"], a["routed_to_synced_max_s"]) == (
        90.0,
        117.0,
        120.0,
    )
    assert (a["attempts"], a["attempts_per_delivery"], a["rate_limited_429"]) == (4, 2.0, 2)
    assert a["top_error_codes"] == "rate_limited (2)"
    assert a["receiving_company_id"] == world.alpha and a["provider"] == "none"
    assert a["partition_key"].startswith("alpha-electric-")
    # Beta: J4 (00:00:00, the first instant of D) synced after 300 s; J1 failed after a 503 and a 400
    assert (b["routed"], b["synced"], b["failed"], b["still_open"], b["failure_rate"]) == (2, 1, 1, 0, 0.5)
    assert (b["routed_to_synced_p50_s"], b["routed_to_synced_p95_s"], b["routed_to_synced_max_s"]) == (300.0,) * 3
    assert (b["attempts"], b["attempts_per_delivery"], b["rate_limited_429"]) == (3, 1.5, 0)
    assert b["top_error_codes"] == "server_error (1), validation_error (1)"


def test_delivery_report_open_only_failures_only_and_empty_days(db: Engine, world: ReportWorld) -> None:
    with session_scope(db) as session:
        open_day = _by_name(delivery_report(session, D1, TZ))
        failures = _by_name(delivery_report(session, D2, TZ))
        empty = delivery_report(session, D3, TZ)
    a = open_day["Alpha Electric"]  # J3 at 00:00:00 of D+1, still pending
    assert (a["routed"], a["synced"], a["failed"], a["still_open"]) == (1, 0, 0, 1)
    assert a["failure_rate"] is None and a["routed_to_synced_p95_s"] is None
    assert (a["attempts"], a["attempts_per_delivery"], a["top_error_codes"]) == (0, 0.0, "")
    b = failures["Beta Plumbing"]
    assert set(failures) == {"Beta Plumbing"}
    assert (b["routed"], b["synced"], b["failed"], b["failure_rate"], b["routed_to_synced_max_s"]) == (
        1,
        0,
        1,
        1.0,
        None,
    )
    assert (b["attempts"], b["top_error_codes"]) == (2, "auth_failed (2)")
    assert empty.empty


def test_midnight_edges_move_with_the_time_zone(db: Engine, world: ReportWorld) -> None:
    """In UTC, D holds J5 (06:59:59Z) and J4 (07:00Z) and J1, but not J2 (06:59:59Z the next day)."""
    with session_scope(db) as session:
        utc = _by_name(delivery_report(session, D, "UTC"))
    a = utc["Alpha Electric"]  # J5 (10 s) and J1 (60 s)
    assert (a["routed"], a["routed_to_synced_p50_s"], a["routed_to_synced_max_s"]) == (2, 35.0, 60.0)
    assert utc["Beta Plumbing"]["routed"] == 2


def test_referral_outcomes_funnel(db: Engine, world: ReportWorld) -> None:
    with session_scope(db) as session:
        day = {r["technician_name"]: r for r in referral_outcomes(session, D, TZ).to_dict("records")}
        next_day = referral_outcomes(session, D1, TZ).to_dict("records")
        only_failures = referral_outcomes(session, D2, TZ).to_dict("records")
        empty = referral_outcomes(session, D3, TZ)
    tina, tom = day["Tina"], day["Tom"]
    # Tina: J1 (delivered, completed 2 days later, 250.00) and J2 (delivered, accepted)
    assert (tina["referred"], tina["delivered"], tina["accepted"], tina["completed"], tina["canceled_dismissed"]) == (
        2,
        2,
        2,
        1,
        0,
    )
    assert (tina["revenue"], tina["conversion_rate"], tina["median_days_to_completion"]) == (
        Decimal("250.00"),
        0.5,
        2.0,
    )
    assert tina["company_name"] == "Referrer Co" and tina["referring_company_id"] == world.referrer
    # Tom: J4 (delivered, then dismissed: the job is canceled); J5 and J3 are other days
    assert (tom["referred"], tom["delivered"], tom["accepted"], tom["completed"], tom["canceled_dismissed"]) == (
        1,
        1,
        0,
        0,
        1,
    )
    assert (tom["revenue"], tom["conversion_rate"], tom["median_days_to_completion"]) == (Decimal("0.00"), 0.0, None)
    assert [(r["technician_name"], r["referred"], r["delivered"]) for r in next_day] == [("Tom", 1, 0)]
    assert [(r["technician_name"], r["referred"], r["delivered"], r["completed"]) for r in only_failures] == [
        ("Tina", 1, 0, 0)
    ]
    assert empty.empty


def test_writing_a_day_replaces_its_rows(db: Engine, world: ReportWorld) -> None:
    with session_scope(db) as session:
        first = write_delivery_report(session, D, TZ)
        write_referral_outcomes(session, D, TZ)
    assert first.rows == 2 and first.totals["routed"] == 4 and first.totals["failure_rate"] == 0.25
    with db.begin() as conn:  # a stale row of a company that has nothing that day, and Beta's J4 fails after all
        conn.execute(
            text(
                "INSERT INTO report_delivery_daily (day, receiving_company_id, provider, partition_key, company_name, "
                "routed, synced, failed, still_open, attempts, rate_limited_429, top_error_codes, timezone) "
                "VALUES (:d, gen_random_uuid(), 'none', 'stale-0000', 'Stale', 9, 9, 0, 0, 9, 0, '', :tz)"
            ),
            {"d": D, "tz": TZ},
        )
        conn.execute(
            text("UPDATE job_routings SET status = 'failed', external_id = NULL WHERE id = :r"),
            {"r": world.routings["J4/beta"]},
        )
    with session_scope(db) as session:
        again = write_delivery_report(session, D, TZ)
        write_referral_outcomes(session, D, TZ)
        again_outcomes = write_referral_outcomes(session, D, TZ)
    assert again.totals["failed"] == 2
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT company_name, synced, failed, timezone FROM report_delivery_daily WHERE day = :d ORDER BY 1"),
            {"d": D},
        ).all()
        outcomes: int = conn.execute(text("SELECT count(*) FROM report_referral_outcomes_daily")).scalar_one()
    assert [tuple(r) for r in rows] == [("Alpha Electric", 2, 0, TZ), ("Beta Plumbing", 0, 2, TZ)]
    assert outcomes == again_outcomes.rows == 2


def test_empty_day_writes_nothing_and_clears_the_day(db: Engine, world: ReportWorld) -> None:
    with session_scope(db) as session:
        result = write_delivery_report(session, D3, TZ)
        outcomes = write_referral_outcomes(session, D3, TZ)
    assert result.rows == 0 and result.totals["routed"] == 0 and result.totals["worst_p95_s"] is None
    assert outcomes.rows == 0 and outcomes.totals["revenue"] == 0.0


def test_a_renamed_company_keeps_its_rows_together(db: Engine, world: ReportWorld) -> None:
    with session_scope(db) as session:
        write_delivery_report(session, D, TZ)
    with db.begin() as conn:
        conn.execute(text("UPDATE companies SET name = 'Alpha Electric & Solar' WHERE id = :c"), {"c": world.alpha})
    with session_scope(db) as session:
        write_delivery_report(session, D1, TZ)
        rows, total = read_report(session, "deliveries", D, D1)
    alpha = [r for r in rows if r["receiving_company_id"] == world.alpha]
    assert total == 3 and [r["day"] for r in alpha] == [D, D1]
    # the name as it was on each day's computation; the key (and id) the same throughout
    assert [r["company_name"] for r in alpha] == ["Alpha Electric", "Alpha Electric & Solar"]
    assert len({r["partition_key"] for r in alpha}) == 1


def test_read_report_pages(db: Engine, world: ReportWorld) -> None:
    with session_scope(db) as session:
        for day in (D, D1, D2, D3):
            write_delivery_report(session, day, TZ)
        everything, total = read_report(session, "deliveries", D, D3)
        page, _ = read_report(session, "deliveries", D, D3, offset=2, limit=2)
    assert total == 4 and [(r["day"], r["company_name"]) for r in everything] == [
        (D, "Alpha Electric"),
        (D, "Beta Plumbing"),
        (D1, "Alpha Electric"),
        (D2, "Beta Plumbing"),
    ]
    assert page == everything[2:4]


def test_sla_verdicts(db: Engine, world: ReportWorld) -> None:
    with session_scope(db) as session:
        df = delivery_report(session, D, TZ)
    assert latency_verdict(df, 300.0, 2.0).passed  # Beta's p95 is exactly 300 s: not over
    slow = latency_verdict(df, 100.0, 2.0)  # Alpha 117 s (WARN), Beta 300 s (over 200: ERROR)
    assert [(o.company_name, o.value, o.severity) for o in slow.offenders] == [
        ("Beta Plumbing", 300.0, "ERROR"),
        ("Alpha Electric", 117.0, "WARN"),
    ]
    assert slow.severity == "ERROR"
    failing = failure_rate_verdict(df, 0.2, 3.0)  # Beta 0.5: over 0.2, not over 0.6
    assert [(o.company_name, o.severity) for o in failing.offenders] == [("Beta Plumbing", "WARN")]
    assert failing.severity == "WARN" and failure_rate_verdict(df, 0.5, 2.0).passed
