"""`scale`: the hot queries against a large backlog (`python -m bench.scale`).

1,000 receiving companies (every 25th without an enabled connection), 1,000,000 synced routings (1,000 per
company) and 100,000 due routings, skewed: 10 companies hold half of them; 2% of the due routings await a lookup
(`needs_reconcile`) and another 2% are in backoff (not due yet). Loaded with `INSERT ... SELECT generate_series`,
then `VACUUM (ANALYZE)` (the state autovacuum keeps the table in) and a CHECKPOINT. Medians over `repetitions`:

- `sensor_p50_ms`: `due_companies(session, limit=500)` (the sensor's query at the default SENSOR_MAX_COMPANIES),
  one short transaction per call, as the sensor does;
- `claim_p50_ms`: `claim(..., limit=200)` of one of the 10 big companies (the worst case: the most due rows to
  choose from), committed; each repetition leases the next 200 oldest;
- `claim_pick_p50_ms`: of that, choosing and locking the 200 and reading their jobs' delivery fields (the claim
  statement's `due` CTE, from EXPLAIN ANALYZE in a rolled-back transaction): the part a backlog would grow;
- `reconcile_claim_p50_ms`: `claim(..., limit=20, statuses=("needs_reconcile",))` of a big company (the reconcile
  job's claim; 20, so that every call gets a full batch at 100k due too);
- `claim_wal_kb_per_call`: WAL a claim of 200 wrote, mostly full-page images (8 kB each): one per page first
  changed since the checkpoint — the heap pages its 200 rows sit on (a lease-only update is HOT since migration
  0010: no index entries) and the receipt. What makes the claim dearer at 1M due (the rows of a big company
  spread over more pages), not choosing them.

Then the due routings grow to 1,000,000 (same skew) and everything is measured again. Targets: sensor ≤ 50 ms and
claim ≤ 10 ms at 100k due; at 1M due each figure within 2x of its 100k figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from bench.__main__ import _fresh_database, _server_admin_url

HEAVY = 10  # companies holding half of the due routings
SENSOR_LIMIT = 500  # SENSOR_MAX_COMPANIES default
CLAIM_LIMIT = 200  # DELIVERY_BATCH_SIZE default
RECONCILE_LIMIT = 20  # a big company has ~100 routings awaiting a lookup at 100k due: every call gets a full batch
TARGET_SENSOR_MS = 50.0
TARGET_CLAIM_MS = 10.0


def _company_id(n: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_OID, f"bench-scale-company-{n}")


def _split(total: int, companies: int) -> list[int]:
    """Per-company counts: the first HEAVY companies share half of `total`, the others the rest."""
    heavy = min(HEAVY, companies)
    half = total // 2 if companies > heavy else total
    counts = [half // heavy + (1 if i < half % heavy else 0) for i in range(heavy)]
    rest = total - half
    light = companies - heavy
    counts += [rest // light + (1 if i < rest % light else 0) for i in range(light)] if light else []
    return counts


def _setup(engine: Engine, companies: int, jobs: int) -> None:
    ids = [_company_id(n) for n in range(companies)]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO companies (id, name) SELECT c, 'Scale Co ' || n FROM unnest(CAST(:ids AS uuid[])) "
                "WITH ORDINALITY AS t(c, n)"
            ),
            {"ids": ids},
        )
        # every 25th company has no enabled connection (every 50th none at all): the sensor must skip them
        conn.execute(
            text(
                "INSERT INTO provider_connections (company_id, account_id, settings, enabled) "
                "SELECT c, 'T' || n, '{\"booking_provider_id\": 1}', n % 25 <> 0 "
                "FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS t(c, n) WHERE n % 50 <> 0"
            ),
            {"ids": ids},
        )
        conn.execute(text("INSERT INTO technicians (company_id, name) VALUES (:c, 'Scale Tech')"), {"c": ids[-1]})
    _add_jobs(engine, 1, jobs)


def _add_jobs(engine: Engine, first: int, last: int) -> None:
    with engine.begin() as conn:
        tech, referrer = conn.execute(text("SELECT id, company_id FROM technicians LIMIT 1")).one()
        conn.execute(
            text(
                "INSERT INTO jobs (id, summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
                "created_by_company_id, created_by_technician_id) "
                "SELECT md5('scale-job-' || g)::uuid, 'Scale job ' || g, g || ' Main St', 'Austin', 'TX', '78701', "
                "'Owner ' || g, '512555' || lpad(g::text, 7, '0'), :r, :t "
                "FROM generate_series(CAST(:a AS int), CAST(:b AS int)) g"
            ),
            {"r": referrer, "t": tech, "a": first, "b": last},
        )


def _insert_routings(engine: Engine, counts: list[int], offsets: list[int], kind: str) -> None:
    """`counts[i]` routings of company i on its jobs offsets[i]+1 …; `kind` = 'synced' or 'due'."""
    ids = [_company_id(n) for n in range(len(counts))]
    if kind == "synced":
        columns = (
            "'synced', 1, now() - interval '30 days' + random() * interval '29 days', 'ext-' || g, "
            "CASE WHEN g % 10 = 0 THEN 'scheduled' ELSE 'completed' END, "
            "now() - interval '30 days' + random() * interval '29 days'"
        )
        names = "status, attempts, next_attempt_at, external_id, external_status, synced_at"
    else:
        # 2% await a lookup, 2% more are in backoff (next attempt in the future), the rest due in the last 6 h
        columns = (
            "CASE WHEN g % 50 = 1 THEN 'needs_reconcile' ELSE 'pending' END, "
            "CASE WHEN g % 50 = 2 THEN now() + random() * interval '1 hour' "
            "ELSE now() - random() * interval '6 hours' END"
        )
        names = "status, next_attempt_at"
    batch = 100
    with engine.begin() as conn:
        for start in range(0, len(ids), batch):
            conn.execute(
                text(
                    f"INSERT INTO job_routings (job_id, receiving_company_id, {names}) "  # noqa: S608
                    f"SELECT md5('scale-job-' || g)::uuid, t.c, {columns} "
                    "FROM unnest(CAST(:ids AS uuid[]), CAST(:counts AS int[]), CAST(:offsets AS int[])) "
                    "AS t(c, cnt, off), generate_series(t.off + 1, t.off + t.cnt) g"
                ),
                {
                    "ids": ids[start : start + batch],
                    "counts": counts[start : start + batch],
                    "offsets": offsets[start : start + batch],
                },
            )


def _vacuum(url: str) -> None:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) job_routings")
        conn.execute("VACUUM (ANALYZE) jobs")
        conn.execute("ANALYZE companies")
        conn.execute("ANALYZE provider_connections")
        # the bulk load filled the WAL: checkpoint now, not during the measurement (needs pg_checkpoint or superuser)
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def _measure(engine: Engine, url: str, repetitions: int) -> dict[str, Any]:
    from integration_core.delivery.claims import claim
    from integration_core.delivery.monitoring import due_companies

    sensor: list[float] = []
    returned = 0
    for i in range(repetitions + 2):
        with Session(engine) as session, session.begin():
            started = time.perf_counter()
            due = due_companies(session, limit=SENSOR_LIMIT)
            elapsed = time.perf_counter() - started
        returned = len(due)
        if i >= 2:  # two warm-ups
            sensor.append(elapsed)

    async def claims() -> tuple[list[float], list[float], int, int]:
        aengine = create_async_engine(url, pool_size=2)
        try:
            timings: list[float] = []
            reconcile: list[float] = []
            claimed = looked_up = 0
            wal.append(_wal(url))
            for i in range(repetitions + 2):
                company = _company_id(i % HEAVY)
                started = time.perf_counter()
                got = await claim(aengine, company, owner="bench-scale", limit=CLAIM_LIMIT, lease_seconds=600)
                elapsed = time.perf_counter() - started
                claimed = len(got)
                if i >= 2:
                    timings.append(elapsed)
            wal.append(_wal(url))
            for i in range(repetitions + 2):
                company = _company_id(i % HEAVY)
                started = time.perf_counter()
                got = await claim(
                    aengine,
                    company,
                    owner="bench-scale",
                    limit=RECONCILE_LIMIT,
                    lease_seconds=600,
                    statuses=("needs_reconcile",),
                )
                elapsed = time.perf_counter() - started
                looked_up = len(got)
                if i >= 2:
                    reconcile.append(elapsed)
            return timings, reconcile, claimed, looked_up
        finally:
            await aengine.dispose()

    wal: list[int | None] = []
    claim_t, reconcile_t, claimed, looked_up = asyncio.run(claims())
    wal_before, wal_after = wal
    calls = repetitions + 2  # warm-ups included
    # hand the leased rows back (as reconcile would), so the next measurement sees the same backlog
    with engine.begin() as conn:
        # (a claim writes the lease only: the routings are still pending / needs_reconcile, delivery/claims.py)
        conn.execute(
            text(
                "UPDATE job_routings SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = 'bench-scale'"
            )
        )
        conn.execute(text("DELETE FROM routing_claims WHERE owner = 'bench-scale'"))
        due_rows: int = conn.execute(
            text(
                "SELECT count(*) FROM job_routings WHERE status IN ('pending', 'needs_reconcile') "
                "AND next_attempt_at <= now()"
            )
        ).scalar_one()
    pick, pick_index = _claim_pick(engine, repetitions)
    return {
        "due_rows": due_rows,
        "sensor_p50_ms": _median_ms(sensor),
        "sensor_max_ms": round(max(sensor) * 1000, 2),
        "sensor_companies_returned": returned,
        "claim_p50_ms": _median_ms(claim_t),
        "claim_max_ms": round(max(claim_t) * 1000, 2),
        "claimed_per_call": claimed,
        "claim_pick_p50_ms": round(statistics.median(pick), 3),
        "claim_pick_index": pick_index,
        "reconcile_claim_p50_ms": _median_ms(reconcile_t),
        "reconcile_claimed_per_call": looked_up,
        # WAL a claim of 200 wrote (the whole server's, warm-ups included): mostly full-page images, one per page first
        # changed since the bench's checkpoint (docs/scaling.md "Where the next bottleneck is", item 3)
        "claim_wal_kb_per_call": round((wal_after - wal_before) / calls / 1024) if wal_before and wal_after else None,
    }


def _wal(url: str) -> int | None:
    """The server's WAL insert position in bytes (`pg_current_wal_lsn()`); None when it cannot be read."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(False)
    try:
        with psycopg.connect(libpq, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


def _claim_pick(engine: Engine, repetitions: int) -> tuple[list[float], str]:
    """The part of the claim the backlog could make grow, choosing the 200 rows to lease (the `due` CTE: scan, order,
    lock, and the 200 jobs' primary-key probes), from EXPLAIN ANALYZE of the real statement in a rolled-back
    transaction; the rest of the claim (updating 200 rows' leases, HOT, the receipt, the commit) does not depend on the
    backlog. Returns (ms per call, index used)."""
    from integration_core.delivery.claims import _claim_statement
    from integration_core.domain import RoutingStatus

    statement = _claim_statement(frozenset({RoutingStatus.pending, RoutingStatus.needs_reconcile}))
    timings: list[float] = []
    indexes: set[str] = set()

    def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
        return [plan, *(n for child in plan.get("Plans", []) for n in nodes(child))]

    for i in range(repetitions):
        with engine.connect() as conn, conn.begin() as tx:
            doc: list[dict[str, Any]] = conn.execute(
                text("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.text),
                {"company": _company_id(i % HEAVY), "limit": CLAIM_LIMIT, "owner": "bench-pick", "lease": 60},
            ).scalar_one()
            tx.rollback()
        [due] = [n for n in nodes(doc[0]["Plan"]) if n.get("Subplan Name") == "CTE due"]
        timings.append(float(due["Actual Total Time"]))
        indexes |= {n["Index Name"] for n in nodes(due) if "Index Name" in n}
    return timings, ",".join(sorted(indexes)) or "none"


def scale(
    due: int = 100_000,
    synced: int = 1_000_000,
    companies: int = 1000,
    *,
    grown_due: int = 1_000_000,
    repetitions: int = 20,
) -> dict[str, Any]:
    admin, _ = _server_admin_url()
    name = f"si_bench_scale_{os.getpid()}"
    url = _fresh_database(admin, name)
    engine = create_engine(url)
    started = time.monotonic()
    try:
        synced_counts = [synced // companies + (1 if i < synced % companies else 0) for i in range(companies)]
        # due rows plus 2% in backoff; routings of one company need distinct jobs
        due_counts = _split(due * 51 // 50, companies)
        grown_counts = _split(grown_due * 51 // 50, companies)
        jobs_needed = max(s + g for s, g in zip(synced_counts, grown_counts, strict=True))
        first_jobs = max(s + d for s, d in zip(synced_counts, due_counts, strict=True))
        _setup(engine, companies, first_jobs)
        _insert_routings(engine, synced_counts, [0] * companies, "synced")
        _insert_routings(engine, due_counts, synced_counts, "due")
        _vacuum(url)
        load_s = time.monotonic() - started
        small = _measure(engine, url, repetitions)

        grow_started = time.monotonic()
        _add_jobs(engine, first_jobs + 1, jobs_needed)
        extra = [g - d for g, d in zip(grown_counts, due_counts, strict=True)]
        _insert_routings(engine, extra, [s + d for s, d in zip(synced_counts, due_counts, strict=True)], "due")
        _vacuum(url)
        grow_s = time.monotonic() - grow_started
        large = _measure(engine, url, repetitions)
        with engine.connect() as conn:
            rows: int = conn.execute(text("SELECT count(*) FROM job_routings")).scalar_one()
    finally:
        engine.dispose()
        libpq = make_url(admin).set(drivername="postgresql").render_as_string(False)
        with psycopg.connect(libpq, autocommit=True) as admin_conn:
            admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        "scenario": "scale",
        "companies": companies,
        "rows": rows,
        "synced": synced,
        "due": small["due_rows"],
        "due_grown": large["due_rows"],
        "sensor_p50_ms": small["sensor_p50_ms"],
        "claim_p50_ms": small["claim_p50_ms"],
        "claim_pick_p50_ms": small["claim_pick_p50_ms"],
        "reconcile_claim_p50_ms": small["reconcile_claim_p50_ms"],
        "sensor_p50_ms_at_1m_due": large["sensor_p50_ms"],
        "claim_p50_ms_at_1m_due": large["claim_p50_ms"],
        "claim_pick_p50_ms_at_1m_due": large["claim_pick_p50_ms"],
        "reconcile_claim_p50_ms_at_1m_due": large["reconcile_claim_p50_ms"],
        "claim_wal_kb_per_call": small["claim_wal_kb_per_call"],
        "claim_wal_kb_per_call_at_1m_due": large["claim_wal_kb_per_call"],
        "detail": {"due_100k": small, "due_1m": large},
        "load_s": round(load_s, 1),
        "grow_s": round(grow_s, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "targets": {
            "sensor_p50_ms": f"<= {TARGET_SENSOR_MS:g}",
            "claim_p50_ms": f"<= {TARGET_CLAIM_MS:g}",
            "sensor_p50_ms_at_1m_due": "<= 2x sensor_p50_ms",
            "claim_p50_ms_at_1m_due": "<= 2x claim_p50_ms",
        },
        "met": small["sensor_p50_ms"] <= TARGET_SENSOR_MS
        and small["claim_p50_ms"] <= TARGET_CLAIM_MS
        and large["sensor_p50_ms"] <= 2 * small["sensor_p50_ms"]
        and large["claim_p50_ms"] <= 2 * small["claim_p50_ms"]
        and small["claimed_per_call"] == CLAIM_LIMIT,
    }


if __name__ == "__main__":
    result = scale()
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["met"] else 1)
