"""Read-side queries the scheduler and the checks use: what is due, what is open, what looks wrong.

Plain SQL over the hot-path indexes (docs/architecture.md); every query is bounded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from integration_core.domain import DUE_ROUTING_STATUSES, RoutingStatus

# Due: waiting for delivery or for a lookup (DUE_ROUTING_STATUSES), and its next attempt time has come. The state
# names are written into the statements as literals (from the enum): the planner matches a literal predicate to the
# partial index `ix_job_routings_due` (WHERE status IN ('pending', 'needs_reconcile')), never a bound parameter.
_DUE_STATUS_SQL = "r.status IN (" + ", ".join(f"'{s}'" for s in DUE_ROUTING_STATUSES) + ")"

# `due` is counted up to this many routings per company: enough to tell a trickle from a backlog (the sensor only
# puts it in a run tag). Counting every due routing of a company with 50,000 is what made the sensor grow with the
# backlog; capped, the count reads at most `limit` x DUE_COUNT_CAP index entries whatever the backlog, about what the
# per-company probes cost themselves (`python -m bench.scale`: at 1M due, caps of 200 and 1,000 added roughly 8 and
# 25 ms to a query of 10-20 ms).
DUE_COUNT_CAP = 50


@dataclass(frozen=True)
class DueCompany:
    company_id: uuid.UUID
    name: str
    partition_key: str  # the company's Dagster partition (companies.partition_key)
    provider: str  # the connection's provider (run tag `provider`)
    tenant_id: str  # the connection's provider account (`account_id`; run tag `tenant`)
    delivery_mode: str  # the connection's delivery mode and request rate: the run's expected length
    rate_limit_per_second: float  # (delivery/scheduling.py)
    due: int  # due routings, exact below DUE_COUNT_CAP; DUE_COUNT_CAP means "at least that many"
    oldest_due_at: datetime


# Per company, not per row: the companies with an enabled connection (a few thousand at most) each probe the
# partial index `ix_job_routings_due` (receiving_company_id, next_attempt_at, sequence) WHERE status IN
# ('pending', 'needs_reconcile') for their oldest due routing; the `limit` longest-waiting then count their due
# routings up to the cap on the same index. Nothing reads, groups or sorts the due rows themselves: the cost follows
# the number of companies.
_DUE = text(
    f"""
    WITH top AS (
        SELECT c.id AS company_id, c.name, c.partition_key, pc.provider, pc.account_id AS tenant_id,
               pc.delivery_mode, pc.rate_limit_per_second, o.oldest_due_at
          FROM provider_connections pc
          JOIN companies c ON c.id = pc.company_id
         CROSS JOIN LATERAL (
                SELECT r.next_attempt_at AS oldest_due_at
                  FROM job_routings r
                 WHERE r.receiving_company_id = pc.company_id
                   AND {_DUE_STATUS_SQL} AND r.next_attempt_at <= now()
                 ORDER BY r.next_attempt_at
                 LIMIT 1
               ) o
         WHERE pc.enabled
         ORDER BY o.oldest_due_at
         LIMIT :limit
    )
    SELECT top.company_id, top.name, top.partition_key, top.provider, top.tenant_id, top.delivery_mode,
           top.rate_limit_per_second, n.due, top.oldest_due_at
      FROM top
     CROSS JOIN LATERAL (
            SELECT count(*) AS due
              FROM (SELECT 1
                      FROM job_routings r
                     WHERE r.receiving_company_id = top.company_id
                       AND {_DUE_STATUS_SQL} AND r.next_attempt_at <= now()
                     LIMIT :cap) capped
           ) n
     ORDER BY top.oldest_due_at
    """
)


def due_companies(session: Session, *, limit: int, count_cap: int = DUE_COUNT_CAP) -> list[DueCompany]:
    """Companies with due work (pending, or awaiting a lookup) and an enabled connection, longest-waiting first.

    Each company's `due` is counted up to `count_cap` (see DUE_COUNT_CAP); the rest is exact."""
    return [DueCompany(**row) for row in session.execute(_DUE, {"limit": limit, "cap": count_cap}).mappings()]


_OPEN = text(
    f"""
    SELECT DISTINCT r.receiving_company_id
      FROM job_routings r
      JOIN provider_connections pc ON pc.company_id = r.receiving_company_id AND pc.enabled
     WHERE r.status = '{RoutingStatus.synced}'
       AND (r.external_status IS NULL OR r.external_status NOT IN ('completed', 'canceled', 'dismissed'))
    """
)


def companies_with_open_routings(session: Session) -> list[uuid.UUID]:
    """Companies whose delivered work is not final yet: the only ones worth a status pull."""
    return [row[0] for row in session.execute(_OPEN)]


def expired_leases(session: Session, *, grace_seconds: float) -> int:
    return int(
        session.execute(
            text(
                f"SELECT count(*) FROM job_routings WHERE status = '{RoutingStatus.claimed}' "
                "AND lease_expires_at < now() - make_interval(secs => :grace)"
            ),
            {"grace": grace_seconds},
        ).scalar_one()
    )


@dataclass(frozen=True)
class FailureRate:
    company_id: uuid.UUID
    name: str
    finished: int
    failed: int

    @property
    def rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0


def failure_rates(session: Session, *, window_hours: float = 24, min_finished: int = 5) -> list[FailureRate]:
    """Per company over the window: routings that reached a final delivery state, and how many failed."""
    rows = session.execute(
        text(
            f"""
            SELECT r.receiving_company_id AS company_id, c.name,
                   count(*) AS finished, count(*) FILTER (WHERE r.status = '{RoutingStatus.failed}') AS failed
              FROM job_routings r JOIN companies c ON c.id = r.receiving_company_id
             WHERE r.status IN ('{RoutingStatus.synced}', '{RoutingStatus.failed}')
               AND r.updated_at > now() - make_interval(hours => :h)
             GROUP BY r.receiving_company_id, c.name
            HAVING count(*) >= :min
            """
        ),
        {"h": int(window_hours), "min": min_finished},
    ).mappings()
    return [FailureRate(**row) for row in rows]


# "Oldest pending", the one definition (queue statistics, `si status`, the `oldest_pending_within_target` check):
# of the routings *due now* (`pending` or `needs_reconcile`, next_attempt_at <= now()), the one routed longest ago,
# aged from when it was routed (created_at) — how long the work an operator expects to move has been waiting. A
# routing backing off after a provider error (next attempt in the future) is not due: it waits by design and does
# not count; a routing awaiting its lookup does, since nothing reaches the provider for it until that lookup runs.
_OLDEST_DUE = text(
    f"""
    SELECT r.receiving_company_id, extract(epoch FROM now() - min(r.created_at)) AS age_s
      FROM job_routings r
     WHERE {_DUE_STATUS_SQL} AND r.next_attempt_at <= now()
       AND (CAST(:company AS uuid) IS NULL OR r.receiving_company_id = CAST(:company AS uuid))
     GROUP BY r.receiving_company_id
    """
)


def oldest_due_ages(session: Session, *, company_id: uuid.UUID | None = None) -> dict[uuid.UUID, float]:
    """Per receiving company with due work: seconds its oldest due routing has waited since it was routed (see
    `_OLDEST_DUE` for the definition). Only `company_id`'s when given."""
    rows = session.execute(_OLDEST_DUE, {"company": company_id}).mappings()
    return {r["receiving_company_id"]: float(r["age_s"]) for r in rows}


def oldest_due_pending_age(session: Session) -> float | None:
    """Seconds the longest-waiting due routing has been waiting since it was routed (None: nothing due): the
    largest of `oldest_due_ages`."""
    return max(oldest_due_ages(session).values(), default=None)


def purge_attempts(session: Session, *, older_than_days: int) -> int:
    """Retention: delete finished attempts older than the window, keeping each routing's latest attempt
    (its history in brief) and never touching attempts of routings still in flight."""
    result = session.execute(
        text(
            f"""
            DELETE FROM sync_attempts a
             USING job_routings r
             WHERE r.id = a.routing_id
               AND r.status IN ('{RoutingStatus.synced}', '{RoutingStatus.failed}')
               AND a.finished_at IS NOT NULL
               AND a.started_at < now() - make_interval(days => :days)
               AND a.id <> (SELECT max(b.id) FROM sync_attempts b WHERE b.routing_id = a.routing_id)
            """
        ),
        {"days": older_than_days},
    )
    return int(getattr(result, "rowcount", 0) or 0)
