"""A fixed data set for the daily reports, with the figures computed by hand (tests/reports, tests/pipelines).

Reporting time zone America/Los_Angeles (UTC-7 in June). Days: D = 2026-06-10, D+1, D+2 (only failures),
D+3 (empty). One referring company (two technicians), two receiving companies, no provider connections
(provider "none"). Every row is written as the main app and the engine write them (plain SQL).

J5  Tom   06-09 23:59:59 (D-1)  Alpha synced after 10 s                                  job routed
J4  Tom   06-10 00:00:00 (D)    Beta synced after 300 s, then dismissed                  job canceled
J1  Tina  06-10 08:00:00 (D)    Alpha synced 60 s, completed, 250.00; Beta failed        job completed +2 days
J2  Tina  06-10 23:59:59 (D)    Alpha synced after 120 s (two 429s first), accepted      job routed
J3  Tom   06-11 00:00:00 (D+1)  Alpha pending                                            job routed
J6  Tina  06-12 12:00:00 (D+2)  Beta failed (auth_failed twice)                          job routed
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

TZ = "America/Los_Angeles"
D = date(2026, 6, 10)
D1, D2, D3 = D + timedelta(days=1), D + timedelta(days=2), D + timedelta(days=3)
LA = ZoneInfo(TZ)


@dataclass(frozen=True)
class ReportWorld:
    referrer: uuid.UUID
    tina: uuid.UUID
    tom: uuid.UUID
    alpha: uuid.UUID
    beta: uuid.UUID
    routings: dict[str, uuid.UUID]  # "J1/alpha" → routing id


def _la(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=LA).astimezone(UTC)


def _company(conn: Connection, name: str) -> uuid.UUID:
    cid: uuid.UUID = conn.execute(
        text("INSERT INTO companies (name, service_zip_codes) VALUES (:n, '{90210}') RETURNING id"), {"n": name}
    ).scalar_one()
    return cid


def _job(
    conn: Connection, tech: uuid.UUID, company: uuid.UUID, at: datetime, status: str, done: datetime | None
) -> uuid.UUID:
    jid: uuid.UUID = conn.execute(
        text(
            "INSERT INTO jobs (summary, street, city, state, zip_code, homeowner_name, homeowner_phone, "
            "created_by_company_id, created_by_technician_id, status, created_at, completed_at) "
            "VALUES ('Panel upgrade', '1 Main St', 'Beverly Hills', 'CA', '90210', 'Homeowner', '+13105550100', "
            ":c, :t, :s, :at, :done) RETURNING id"
        ),
        {"c": company, "t": tech, "s": status, "at": at, "done": done},
    ).scalar_one()
    return jid


def _routing(
    conn: Connection,
    job: uuid.UUID,
    company: uuid.UUID,
    at: datetime,
    status: str,
    *,
    synced_after: float | None = None,
    external_status: str | None = None,
    revenue: str | None = None,
    attempts: tuple[tuple[int | None, str | None, str], ...] = (),
) -> uuid.UUID:
    synced_at = at + timedelta(seconds=synced_after) if synced_after is not None else None
    rid: uuid.UUID = conn.execute(
        text(
            "INSERT INTO job_routings (job_id, receiving_company_id, status, attempts, external_id, synced_at, "
            "external_status, revenue, created_at) VALUES (:j, :c, :s, :n, :ext, :synced, :es, :rev, :at) "
            "RETURNING id"
        ),
        {
            "j": job,
            "c": company,
            "s": status,
            "n": len(attempts),
            "ext": "ext-1" if status == "synced" else None,
            "synced": synced_at,
            "es": external_status,
            "rev": revenue,
            "at": at,
        },
    ).scalar_one()
    for i, (http_status, error_code, outcome) in enumerate(attempts, start=1):
        started = at + timedelta(seconds=i)
        conn.execute(
            text(
                "INSERT INTO sync_attempts (routing_id, attempt_no, started_at, finished_at, outcome, http_status, "
                "error_code) VALUES (:r, :n, :s, :s, :o, :h, :e)"
            ),
            {"r": rid, "n": i, "s": started, "o": outcome, "h": http_status, "e": error_code},
        )
    return rid


def make_report_world(db: Engine) -> ReportWorld:
    with db.begin() as conn:
        referrer = _company(conn, "Referrer Co")
        alpha = _company(conn, "Alpha Electric")
        beta = _company(conn, "Beta Plumbing")
        tina, tom = (
            uuid.UUID(
                str(
                    conn.execute(
                        text("INSERT INTO technicians (company_id, name) VALUES (:c, :n) RETURNING id"),
                        {"c": referrer, "n": n},
                    ).scalar_one()
                )
            )
            for n in ("Tina", "Tom")
        )
        r: dict[str, uuid.UUID] = {}
        ok: tuple[int | None, str | None, str] = (200, None, "synced")
        j5 = _job(conn, tom, referrer, _la(D - timedelta(days=1), 23, 59, 59), "routed", None)
        r["J5/alpha"] = _routing(
            conn, j5, alpha, _la(D - timedelta(days=1), 23, 59, 59), "synced", synced_after=10, attempts=(ok,)
        )
        j4 = _job(conn, tom, referrer, _la(D, 0), "canceled", None)
        r["J4/beta"] = _routing(
            conn, j4, beta, _la(D, 0), "synced", synced_after=300, external_status="dismissed", attempts=(ok,)
        )
        t1 = _la(D, 8)
        j1 = _job(conn, tina, referrer, t1, "completed", t1 + timedelta(days=2))
        r["J1/alpha"] = _routing(
            conn,
            j1,
            alpha,
            t1,
            "synced",
            synced_after=60,
            external_status="completed",
            revenue="250.00",
            attempts=(ok,),
        )
        r["J1/beta"] = _routing(
            conn,
            j1,
            beta,
            t1,
            "failed",
            attempts=((503, "server_error", "retryable"), (400, "validation_error", "failed")),
        )
        t2 = _la(D, 23, 59, 59)
        j2 = _job(conn, tina, referrer, t2, "routed", None)
        r["J2/alpha"] = _routing(
            conn,
            j2,
            alpha,
            t2,
            "synced",
            synced_after=120,
            external_status="accepted",
            attempts=((429, "rate_limited", "rate_limited"), (429, "rate_limited", "rate_limited"), ok),
        )
        j3 = _job(conn, tom, referrer, _la(D1, 0), "routed", None)
        r["J3/alpha"] = _routing(conn, j3, alpha, _la(D1, 0), "pending")
        j6 = _job(conn, tina, referrer, _la(D2, 12), "routed", None)
        r["J6/beta"] = _routing(
            conn,
            j6,
            beta,
            _la(D2, 12),
            "failed",
            attempts=((401, "auth_failed", "auth_failed"), (401, "auth_failed", "auth_failed")),
        )
    return ReportWorld(referrer, tina, tom, alpha, beta, r)
