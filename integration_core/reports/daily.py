"""The two daily reports, computed from the service's own tables and written to report tables (docs/reports.md).

A report day is a calendar day in the reporting time zone. Both reports follow a *cohort*: the routings routed
(`delivery_report`) or the referrals made (`referral_outcomes`) during the day, with what has become of them by
the time the report is computed. Re-computing a day therefore gives the latest state of that day's work; two
computations at the same moment (a backfill, or seven single days) give the same figures.

Filtering and the heavy aggregation (counts, percentiles over up to millions of routings) run in PostgreSQL;
pandas joins the pieces, derives rates and formats the top error codes. Writing a day is a delete and an insert
of that day's rows in one transaction: re-materialising a day replaces it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, insert, text
from sqlalchemy.orm import Session

from integration_core.db.models import ReportDeliveryDaily, ReportReferralOutcomesDaily
from integration_core.domain import RoutingStatus
from integration_core.reports.days import day_bounds

__all__ = [
    "ACCEPTED_STATUSES",
    "DELIVERY_COLUMNS",
    "OUTCOME_COLUMNS",
    "ReportResult",
    "delivery_report",
    "referral_outcomes",
    "write_delivery_report",
    "write_referral_outcomes",
]

# routings not finished either way: waiting, in a run, awaiting a lookup, or waiting for a connection
OPEN_STATUSES = (
    RoutingStatus.pending,
    RoutingStatus.claimed,
    RoutingStatus.needs_reconcile,
    RoutingStatus.no_integration,
)
# provider statuses that mean the receiving company took the work on (or finished it)
ACCEPTED_STATUSES = ("accepted", "converted", "scheduled", "dispatched", "in_progress", "hold", "completed")
TOP_ERROR_CODES = 3

DELIVERY_COLUMNS = [
    "day",
    "receiving_company_id",
    "provider",
    "partition_key",
    "company_name",
    "routed",
    "synced",
    "failed",
    "still_open",
    "failure_rate",
    "routed_to_synced_p50_s",
    "routed_to_synced_p95_s",
    "routed_to_synced_max_s",
    "attempts",
    "attempts_per_delivery",
    "rate_limited_429",
    "top_error_codes",
]
OUTCOME_COLUMNS = [
    "day",
    "referring_company_id",
    "technician_id",
    "partition_key",
    "company_name",
    "technician_name",
    "referred",
    "delivered",
    "accepted",
    "completed",
    "canceled_dismissed",
    "revenue",
    "conversion_rate",
    "median_days_to_completion",
]


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


# One pass over the day's routings (a sequential scan, or the created_at index for a small share of the table),
# hashed per receiving company: no sort. The synced ones' latencies come back as one array per company and numpy
# takes the percentiles (linear interpolation, as percentile_cont). Percentiles in SQL need the rows sorted by
# company: over 1M routings the planner walked the claim index row by row (9 s in `make bench` report_daily), and
# with a sort forced it still took 5 s; this takes about 1 s.
_ROUTINGS = text(
    f"""
    SELECT r.receiving_company_id AS company_id,
           count(*) AS routed,
           count(*) FILTER (WHERE r.status = '{RoutingStatus.synced}') AS synced,
           count(*) FILTER (WHERE r.status = '{RoutingStatus.failed}') AS failed,
           count(*) FILTER (WHERE r.status IN ({_in(OPEN_STATUSES)})) AS still_open,
           array_agg(CAST(extract(epoch FROM r.synced_at - r.created_at) AS float8))
               FILTER (WHERE r.status = '{RoutingStatus.synced}') AS latencies
      FROM job_routings r
     WHERE r.created_at >= :start AND r.created_at < :end
     GROUP BY r.receiving_company_id
    """  # noqa: S608 - state names from the domain enums only
)

# The day's routings' attempts (deliveries and lookups), per company and error code. An attempt of a routing
# routed during the day started during or after the day: `started_at >= :start` lets the attempts' own index cut
# the older ones before the join.
_ATTEMPTS = text(
    """
    SELECT r.receiving_company_id AS company_id, a.error_code, count(*) AS n,
           count(*) FILTER (WHERE a.http_status = 429 OR a.outcome = 'rate_limited') AS n429
      FROM sync_attempts a
      JOIN job_routings r ON r.id = a.routing_id
     WHERE a.started_at >= :start AND r.created_at >= :start AND r.created_at < :end
     GROUP BY r.receiving_company_id, a.error_code
    """
)

# Name, key and provider of the companies that appear (the provider of an enabled connection first)
_COMPANIES = text(
    """
    SELECT c.id AS company_id, c.name AS company_name, c.partition_key,
           coalesce((SELECT pc.provider FROM provider_connections pc WHERE pc.company_id = c.id
                      ORDER BY pc.enabled DESC, pc.updated_at DESC LIMIT 1), 'none') AS provider
      FROM companies c
     WHERE c.id = ANY(:ids)
    """
)

# The day's referrals, one row per referring company and technician. A referral counts as delivered when one of
# its routings reached a field-service system, accepted when one was taken on there, completed / canceled by the
# job's own status (the status pull sets it: completed by any routing, canceled when all were canceled or
# dismissed); revenue is what its routings brought in; days to completion from the referral to the job's
# completion.
_OUTCOMES = text(
    f"""
    WITH per_job AS (
        SELECT j.id, j.created_by_company_id AS company_id, j.created_by_technician_id AS technician_id,
               j.status, j.created_at, j.completed_at,
               coalesce(bool_or(r.status = '{RoutingStatus.synced}'), false) AS delivered,
               coalesce(bool_or(r.external_status IN ({_in(ACCEPTED_STATUSES)})), false) AS accepted,
               coalesce(sum(r.revenue), 0) AS revenue
          FROM jobs j
          LEFT JOIN job_routings r ON r.job_id = j.id
         WHERE j.created_at >= :start AND j.created_at < :end
         GROUP BY j.id
    )
    SELECT company_id, technician_id,
           count(*) AS referred,
           count(*) FILTER (WHERE delivered) AS delivered,
           count(*) FILTER (WHERE accepted OR status = 'completed') AS accepted,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'canceled') AS canceled_dismissed,
           sum(revenue) AS revenue,
           array_agg(CAST(extract(epoch FROM completed_at - created_at) / 86400.0 AS float8))
               FILTER (WHERE status = 'completed' AND completed_at IS NOT NULL) AS days_to_completion
      FROM per_job
     GROUP BY company_id, technician_id
    """  # noqa: S608 - state names from the domain enums only
)

_NAMES = text(
    """
    SELECT t.id AS technician_id, t.name AS technician_name, c.id AS company_id, c.name AS company_name,
           c.partition_key
      FROM technicians t JOIN companies c ON c.id = t.company_id
     WHERE t.id = ANY(:ids)
    """
)


# A day over a million routings sorts and hashes about a hundred megabytes; with PostgreSQL's default work_mem
# (4 MB) those spill to disk. The report's own transaction asks for more (SET LOCAL: this transaction only).
REPORT_WORK_MEM = "128MB"


def _report_memory(session: Session) -> None:
    session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))


def _frame(session: Session, statement: Any, params: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    rows = session.execute(statement, params).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=columns)


def _rate(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator, None where the denominator is 0."""
    out = numerator.astype("float64") / denominator.where(denominator > 0).astype("float64")
    return out.round(4).astype("object").where(out.notna(), None)


def _seconds(values: pd.Series) -> pd.Series:
    out = pd.to_numeric(values, errors="coerce").astype("float64").round(3)
    return out.astype("object").where(out.notna(), None)


def _latency_stats(latencies: list[float] | None) -> tuple[float | None, float | None, float | None]:
    """(p50, p95, max) of one company's routed → synced seconds; percentiles interpolated linearly between the
    closest ranks, as PostgreSQL's percentile_cont."""
    if not latencies:
        return None, None, None
    values = np.asarray(latencies, dtype="float64")
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95), float(values.max())


def _top_codes(errors: pd.DataFrame) -> pd.Series:
    """Per company: 'code (n)' of its most frequent error codes, most frequent first (ties by code)."""
    coded = errors.dropna(subset=["error_code"])
    if coded.empty:
        return pd.Series(dtype="object")
    ranked = coded.sort_values(["company_id", "n", "error_code"], ascending=[True, False, True])
    top = ranked.groupby("company_id", sort=False).head(TOP_ERROR_CODES)
    return top.groupby("company_id", sort=False).apply(
        lambda g: ", ".join(f"{c} ({int(n)})" for c, n in zip(g["error_code"], g["n"], strict=True)),
        include_groups=False,
    )


def delivery_report(session: Session, day: date, tz: str) -> pd.DataFrame:
    """Per receiving company (and its provider) for the routings routed on `day` in `tz`: routed, synced, failed,
    still open, failure rate (failed / (synced + failed)), routed → synced p50/p95/max in seconds, attempts and
    attempts per routed referral, 429s, the top error codes. Columns: DELIVERY_COLUMNS; one row per company."""
    start, end = day_bounds(day, tz)
    params = {"start": start, "end": end}
    _report_memory(session)
    routed = _frame(session, _ROUTINGS, params, ["company_id", "routed", "synced", "failed", "still_open", "latencies"])
    if routed.empty:
        return pd.DataFrame(columns=DELIVERY_COLUMNS)
    stats = routed["latencies"].map(_latency_stats)
    routed["p50"] = stats.map(lambda s: s[0])
    routed["p95"] = stats.map(lambda s: s[1])
    routed["max_s"] = stats.map(lambda s: s[2])
    attempts = _frame(session, _ATTEMPTS, params, ["company_id", "error_code", "n", "n429"])
    companies = _frame(
        session,
        _COMPANIES,
        {"ids": list(routed["company_id"])},
        ["company_id", "company_name", "partition_key", "provider"],
    )
    per_company = attempts.groupby("company_id").agg(attempts=("n", "sum"), rate_limited_429=("n429", "sum"))
    df = routed.merge(companies, on="company_id", how="left").merge(
        per_company, left_on="company_id", right_index=True, how="left"
    )
    codes = df["company_id"].map(_top_codes(attempts))
    df["top_error_codes"] = codes.where(codes.notna(), "")
    for column in ("routed", "synced", "failed", "still_open", "attempts", "rate_limited_429"):
        df[column] = pd.to_numeric(df[column], errors="coerce").fillna(0).astype("int64")
    df["failure_rate"] = _rate(df["failed"], df["synced"] + df["failed"])
    df["attempts_per_delivery"] = _rate(df["attempts"], df["routed"])
    df["routed_to_synced_p50_s"] = _seconds(df["p50"])
    df["routed_to_synced_p95_s"] = _seconds(df["p95"])
    df["routed_to_synced_max_s"] = _seconds(df["max_s"])
    df["day"] = day
    df = df.rename(columns={"company_id": "receiving_company_id"})
    return df[DELIVERY_COLUMNS].sort_values(["company_name", "provider"], ignore_index=True)


def referral_outcomes(session: Session, day: date, tz: str) -> pd.DataFrame:
    """The referral funnel per referring company and technician for the referrals made on `day` in `tz`:
    referred, delivered, accepted, completed, canceled/dismissed, revenue, conversion rate (completed /
    referred), median days to completion. Columns: OUTCOME_COLUMNS."""
    start, end = day_bounds(day, tz)
    _report_memory(session)
    df = _frame(
        session,
        _OUTCOMES,
        {"start": start, "end": end},
        [
            "company_id",
            "technician_id",
            "referred",
            "delivered",
            "accepted",
            "completed",
            "canceled_dismissed",
            "revenue",
            "days_to_completion",
        ],
    )
    if df.empty:
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    names = _frame(
        session,
        _NAMES,
        {"ids": list(df["technician_id"])},
        ["technician_id", "technician_name", "company_id", "company_name", "partition_key"],
    )
    df = df.merge(names.drop(columns=["company_id"]), on="technician_id", how="left")
    for column in ("referred", "delivered", "accepted", "completed", "canceled_dismissed"):
        df[column] = df[column].astype("int64")
    df["revenue"] = df["revenue"].map(lambda v: Decimal(v).quantize(Decimal("0.01")))
    df["conversion_rate"] = _rate(df["completed"], df["referred"])
    # the median in numpy (as for the latencies: hashed in SQL, no sort of the day's referrals)
    medians = df["days_to_completion"].map(lambda v: float(np.median(v)) if v else None)
    days = pd.to_numeric(medians, errors="coerce").astype("float64").round(3)
    df["median_days_to_completion"] = days.astype("object").where(days.notna(), None)
    df["day"] = day
    df = df.rename(columns={"company_id": "referring_company_id"})
    return df[OUTCOME_COLUMNS].sort_values(["company_name", "technician_name"], ignore_index=True)


@dataclass(frozen=True)
class ReportResult:
    """What a computed day wrote: its rows (the frame) and the figures worth plotting."""

    day: date
    timezone: str
    frame: pd.DataFrame
    totals: dict[str, float | int | None] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.frame)


def _records(df: pd.DataFrame, tz: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for row in df.to_dict("records"):
        clean: dict[str, Any] = {}
        for k, v in row.items():
            item = getattr(v, "item", None)
            if isinstance(v, float) and v != v:  # NaN
                clean[str(k)] = None
            elif callable(item) and not isinstance(v, Decimal | uuid.UUID):  # numpy scalars → Python
                clean[str(k)] = item()
            else:
                clean[str(k)] = v
        clean["timezone"] = tz
        records.append(clean)
    return records


def _replace_day(session: Session, model: Any, day: date, records: list[dict[str, Any]]) -> None:
    """Delete the day's rows and insert the new ones: the caller's transaction makes it one change."""
    session.execute(delete(model).where(model.day == day))
    if records:
        session.execute(insert(model), records)


def delivery_totals(df: pd.DataFrame) -> dict[str, float | int | None]:
    """Day totals: counts summed; p95 is the worst company p95 (a percentile of a percentile would mislead)."""
    if df.empty:
        return {
            "companies": 0,
            "routed": 0,
            "synced": 0,
            "failed": 0,
            "still_open": 0,
            "rate_limited_429": 0,
            "failure_rate": None,
            "worst_p95_s": None,
            "max_s": None,
        }
    synced, failed = int(df["synced"].sum()), int(df["failed"].sum())
    p95 = pd.to_numeric(df["routed_to_synced_p95_s"], errors="coerce")
    mx = pd.to_numeric(df["routed_to_synced_max_s"], errors="coerce")
    return {
        "companies": int(df["receiving_company_id"].nunique()),
        "routed": int(df["routed"].sum()),
        "synced": synced,
        "failed": failed,
        "still_open": int(df["still_open"].sum()),
        "rate_limited_429": int(df["rate_limited_429"].sum()),
        "failure_rate": round(failed / (synced + failed), 4) if synced + failed else None,
        "worst_p95_s": float(p95.max()) if p95.notna().any() else None,
        "max_s": float(mx.max()) if mx.notna().any() else None,
    }


def outcome_totals(df: pd.DataFrame) -> dict[str, float | int | None]:
    if df.empty:
        return {
            "referring_companies": 0,
            "referred": 0,
            "delivered": 0,
            "accepted": 0,
            "completed": 0,
            "canceled_dismissed": 0,
            "revenue": 0.0,
            "conversion_rate": None,
        }
    referred, completed = int(df["referred"].sum()), int(df["completed"].sum())
    return {
        "referring_companies": int(df["referring_company_id"].nunique()),
        "referred": referred,
        "delivered": int(df["delivered"].sum()),
        "accepted": int(df["accepted"].sum()),
        "completed": completed,
        "canceled_dismissed": int(df["canceled_dismissed"].sum()),
        "revenue": float(sum(df["revenue"], Decimal(0))),
        "conversion_rate": round(completed / referred, 4) if referred else None,
    }


def write_delivery_report(session: Session, day: date, tz: str) -> ReportResult:
    """Compute `delivery_report` for `day` and replace that day's rows in `report_delivery_daily`."""
    df = delivery_report(session, day, tz)
    _replace_day(session, ReportDeliveryDaily, day, _records(df, tz))
    return ReportResult(day, tz, df, delivery_totals(df))


def write_referral_outcomes(session: Session, day: date, tz: str) -> ReportResult:
    """Compute `referral_outcomes` for `day` and replace that day's rows in `report_referral_outcomes_daily`."""
    df = referral_outcomes(session, day, tz)
    _replace_day(session, ReportReferralOutcomesDaily, day, _records(df, tz))
    return ReportResult(day, tz, df, outcome_totals(df))
