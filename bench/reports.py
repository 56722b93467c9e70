"""`report_daily`: materialising one day of both daily reports over 1,000,000 routings (`python -m bench.reports`).

One reporting day (America/Los_Angeles) holding every routing (the worst case for one partition): 250,000
referrals from one referring company's 50 technicians, each routed to 4 of 1,000 receiving companies (1,000,000
routings): 90% synced after 5-600 s (their providers: accepted, completed with revenue, dismissed), 4% failed,
6% still open; 1,200,000 sync attempts (a 429 or an error code before 20% of the deliveries). Loaded with
`INSERT ... SELECT generate_series` (bench/scale.py's way), then `VACUUM (ANALYZE)`.

Measured: `dagster.materialize` of `delivery_report` and `referral_outcomes` for that day (in process, ephemeral
instance, the real PostgreSQL), wall time (`materialize_s`, target <= 10 s) and each report's own compute + write
time; peak memory of the process (`peak_rss_mb`, ru_maxrss) and how much the materialization added to it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import uuid
from datetime import date
from typing import Any

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bench.__main__ import _fresh_database, _server_admin_url

DAY = date(2026, 6, 10)
TZ = "America/Los_Angeles"
TARGET_S = 10.0


def _company_id(n: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_OID, f"bench-report-company-{n}")


def _load(engine: Engine, jobs: int, companies: int, fanout: int) -> None:
    ids = [_company_id(n) for n in range(companies)]
    start = f"{DAY.isoformat()} 00:00:00 {TZ}"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO companies (id, name) SELECT c, 'Receiver ' || n FROM unnest(CAST(:ids AS uuid[])) "
                "WITH ORDINALITY AS t(c, n)"
            ),
            {"ids": ids},
        )
        referrer: uuid.UUID = conn.execute(
            text("INSERT INTO companies (name) VALUES ('Referrer') RETURNING id")
        ).scalar_one()
        conn.execute(
            text("INSERT INTO technicians (company_id, name) SELECT :r, 'Tech ' || g FROM generate_series(1, 50) g"),
            {"r": referrer},
        )
        techs = [r[0] for r in conn.execute(text("SELECT id FROM technicians ORDER BY name"))]
        # referrals spread over the day; 1 in 8 completed (2-10 days later), 1 in 20 canceled
        conn.execute(
            text(
                "INSERT INTO jobs (id, summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
                "created_by_company_id, created_by_technician_id, status, created_at, completed_at) "
                "SELECT md5('report-job-' || g)::uuid, 'Job ' || g, g || ' Main St', 'Austin', 'TX', '78701', "
                "'Owner ' || g, '512555' || lpad(g::text, 7, '0'), :r, (CAST(:techs AS uuid[]))[1 + g % 50], "
                "CASE WHEN g % 8 = 0 THEN 'completed' WHEN g % 20 = 1 THEN 'canceled' ELSE 'routed' END, "
                "CAST(:start AS timestamptz) + (g::float / :jobs) * interval '86399 seconds', "
                "CASE WHEN g % 8 = 0 THEN CAST(:start AS timestamptz) + interval '2 days' + (g % 9) * interval "
                "'1 day' END "
                "FROM generate_series(1, :jobs) g"
            ),
            {"r": referrer, "techs": techs, "start": start, "jobs": jobs},
        )
        # each referral to `fanout` receiving companies; status by hash of (job, k)
        conn.execute(
            text(
                "INSERT INTO job_routings (job_id, receiving_company_id, status, attempts, external_id, synced_at, "
                "external_status, revenue, created_at) "
                "SELECT j.id, (CAST(:ids AS uuid[]))[1 + (j.g * 7 + k * 251) % :companies], s.status, 1, "
                "CASE WHEN s.status = 'synced' THEN 'ext-' || j.g || '-' || k END, "
                "CASE WHEN s.status = 'synced' THEN j.created_at + (5 + (j.g * 13 + k) % 596) * interval '1 second' "
                "END, "
                "CASE WHEN s.status <> 'synced' THEN NULL WHEN j.status = 'completed' AND k = 0 THEN 'completed' "
                "WHEN j.status = 'canceled' THEN 'dismissed' WHEN (j.g + k) % 3 = 0 THEN 'accepted' END, "
                "CASE WHEN s.status = 'synced' AND j.status = 'completed' AND k = 0 THEN 100 + j.g % 900 END, "
                "j.created_at "
                "FROM (SELECT id, created_at, status, CAST(substr(summary, 5) AS int) AS g FROM jobs) j "
                "CROSS JOIN generate_series(0, :fanout - 1) k "
                "CROSS JOIN LATERAL (SELECT CASE WHEN (j.g * 31 + k) % 100 < 90 THEN 'synced' "
                "WHEN (j.g * 31 + k) % 100 < 94 THEN 'failed' "
                "WHEN (j.g * 31 + k) % 100 < 97 THEN 'pending' ELSE 'needs_reconcile' END AS status) s"
            ),
            {"ids": ids, "companies": companies, "fanout": fanout},
        )
        # one attempt per routing; one more before it (a 429 or an error) for 1 in 5
        conn.execute(
            text(
                "INSERT INTO sync_attempts (routing_id, attempt_no, started_at, finished_at, outcome, http_status, "
                "error_code) "
                "SELECT r.id, 1, r.created_at + interval '1 second', r.created_at + interval '2 seconds', "
                "CASE r.status WHEN 'synced' THEN 'synced' WHEN 'failed' THEN 'failed' ELSE 'retryable' END, "
                "CASE r.status WHEN 'synced' THEN 200 WHEN 'failed' THEN 400 ELSE 503 END, "
                "CASE r.status WHEN 'synced' THEN NULL WHEN 'failed' THEN 'validation_error' ELSE 'server_error' END "
                "FROM job_routings r"
            )
        )
        conn.execute(
            text(
                "INSERT INTO sync_attempts (routing_id, attempt_no, started_at, finished_at, outcome, http_status, "
                "error_code) "
                "SELECT r.id, 0, r.created_at, r.created_at, "
                "CASE WHEN r.sequence % 2 = 0 THEN 'rate_limited' ELSE 'retryable' END, "
                "CASE WHEN r.sequence % 2 = 0 THEN 429 ELSE 502 END, "
                "CASE WHEN r.sequence % 2 = 0 THEN 'rate_limited' ELSE 'bad_gateway' END "
                "FROM job_routings r WHERE r.sequence % 5 = 0"
            )
        )


def _vacuum(url: str) -> None:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        for table in ("job_routings", "jobs", "sync_attempts", "companies", "technicians"):
            conn.execute(f"VACUUM (ANALYZE) {table}")


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def report_daily(jobs: int = 250_000, companies: int = 1000, fanout: int = 4) -> dict[str, Any]:
    admin, _ = _server_admin_url()
    name = f"si_bench_reports_{os.getpid()}"
    url = _fresh_database(admin, name)
    engine = create_engine(url)
    started = time.monotonic()
    try:
        _load(engine, jobs, companies, fanout)
        _vacuum(url)
        load_s = round(time.monotonic() - started, 1)
        with engine.connect() as conn:
            routings: int = conn.execute(text("SELECT count(*) FROM job_routings")).scalar_one()
            attempts: int = conn.execute(text("SELECT count(*) FROM sync_attempts")).scalar_one()
        os.environ.update(
            {
                "DATABASE_URL": url,
                "REPORTING_TIMEZONE": TZ,
                "DELIVERY_SLA_SECONDS": "3600",
                "FAILURE_RATE_THRESHOLD": "1",
            }
        )
        from integration_core.settings import get_settings

        get_settings.cache_clear()
        import dagster as dg

        from integration_core.db.engine import session_scope
        from integration_core.reports.daily import write_delivery_report, write_referral_outcomes
        from pipelines.reports import delivery_report, referral_outcomes
        from pipelines.resources import IntegrationResource

        # each report on its own, computed and written (what one asset's body costs)
        t = time.perf_counter()
        with session_scope(engine) as session:
            deliveries = write_delivery_report(session, DAY, TZ)
        delivery_s = time.perf_counter() - t
        t = time.perf_counter()
        with session_scope(engine) as session:
            outcomes = write_referral_outcomes(session, DAY, TZ)
        outcomes_s = time.perf_counter() - t

        rss_before = _rss_mb()
        with dg.instance_for_test() as instance:  # the instance exists before (as the daemon's does)
            t = time.perf_counter()
            result = dg.materialize(
                [delivery_report, referral_outcomes],
                partition_key=DAY.isoformat(),
                instance=instance,
                resources={"integration": IntegrationResource(database_url=url)},
            )
            materialize_s = time.perf_counter() - t
            steps_s = 0.0
            for event in result.all_events:
                if event.event_type_value == "STEP_SUCCESS":
                    steps_s += float(getattr(event.event_specific_data, "duration_ms", 0) or 0) / 1000
        rss_after = _rss_mb()
        load_average = os.getloadavg()[0]
    finally:
        engine.dispose()
        if not os.environ.get("BENCH_KEEP_DB"):  # kept (for EXPLAIN) only when asked
            libpq = make_url(admin).set(drivername="postgresql").render_as_string(False)
            with psycopg.connect(libpq, autocommit=True) as admin_conn:
                admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        "scenario": "report_daily",
        "routings": routings,
        "attempts": attempts,
        "referrals": jobs,
        "receiving_companies": companies,
        "load_s": load_s,
        "delivery_report_s": round(delivery_s, 2),
        "referral_outcomes_s": round(outcomes_s, 2),
        "materialize_s": round(materialize_s, 2),
        "asset_steps_s": round(steps_s, 2),
        "load_average_1m": round(load_average, 1),  # the machine is shared: what else was running
        "delivery_rows": deliveries.rows,
        "outcome_rows": outcomes.rows,
        "routed_total": deliveries.totals.get("routed"),
        "peak_rss_mb": rss_after,
        "rss_added_by_materialize_mb": round(rss_after - rss_before, 1),
        "targets": {"materialize_s": f"<= {TARGET_S:g}"},
        "met": bool(result.success) and materialize_s <= TARGET_S and routings >= 1_000_000,
    }


if __name__ == "__main__":
    out = report_daily()
    print(json.dumps(out, indent=2))
    sys.exit(0 if out["met"] else 1)
