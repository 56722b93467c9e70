"""Read models of the operator surface, shared by the HTTP admin API and `si`: queue statistics, the run
queue, rate limits, companies and provider connections. Plain SQL, bounded, no secrets."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, selectinload

from integration_core import audit
from integration_core.db import budget
from integration_core.db.models import Company, ProviderConnection, Technician
from integration_core.delivery.claims import unleased
from integration_core.delivery.monitoring import oldest_due_ages
from integration_core.domain import DUE_ROUTING_STATUSES, AttemptOutcome, RoutingStatus
from integration_core.operations.dagster_client import DagsterClient, DagsterUnavailable
from integration_core.referrals.directory import connection_out
from integration_core.schemas import (
    CancelledRunOut,
    ClearQueuesOut,
    CompanyDetailOut,
    CompanyOut,
    CompanyQueueOut,
    ConnectionSummary,
    DagsterQueueOut,
    ProviderOut,
    QueueStatsOut,
    RateLimitOut,
    SkillOut,
    TechnicianOut,
)
from integration_core.settings import Settings

STATUSES = [s.value for s in RoutingStatus]

# --------------------------------------------------------------------------------------------------------------
# queue statistics
# --------------------------------------------------------------------------------------------------------------

# per company and status: routings, and how many are due now (DUE_ROUTING_STATUSES, next attempt time come, and not
# leased by a run: a claim writes only the lease, and the routing reads `claimed` once its run has started on it,
# delivery/claims.py)
_BY_COMPANY = text(
    f"""
    SELECT r.receiving_company_id AS company_id, c.name AS company_name, c.partition_key, r.status, count(*) AS n,
           count(*) FILTER (WHERE r.status IN ({", ".join(f"'{s}'" for s in DUE_ROUTING_STATUSES)})
                              AND r.next_attempt_at <= now()
                              AND {unleased("r")}) AS due
      FROM job_routings r
      JOIN companies c ON c.id = r.receiving_company_id
     WHERE CAST(:company AS uuid) IS NULL OR r.receiving_company_id = CAST(:company AS uuid)
     GROUP BY r.receiving_company_id, c.name, c.partition_key, r.status
    """  # noqa: S608 - state names from the domain enums only
)


def queue_stats(session: Session, settings: Settings, *, company_id: uuid.UUID | None = None) -> QueueStatsOut:
    """Routings by status per receiving company, the oldest pending routing's age (`oldest_pending_age_seconds`:
    the oldest routing due now, as `delivery.monitoring.oldest_due_ages` defines it), and Dagster's run queue
    (`dagster: null` with the reason when the webserver cannot be reached)."""
    companies: dict[uuid.UUID, CompanyQueueOut] = {}
    oldest = oldest_due_ages(session, company_id=company_id)
    for row in session.execute(_BY_COMPANY, {"company": company_id}).mappings():
        entry = companies.setdefault(
            row["company_id"],
            CompanyQueueOut(
                company_id=row["company_id"],
                company_name=row["company_name"],
                partition_key=row["partition_key"],
                by_status=dict.fromkeys(STATUSES, 0),
                total=0,
                due_now=0,
                oldest_pending_age_seconds=round(oldest[row["company_id"]], 1) if row["company_id"] in oldest else None,
            ),
        )
        entry.by_status[row["status"]] = int(row["n"])
        entry.total += int(row["n"])
        entry.due_now += int(row["due"])
    totals = dict.fromkeys(STATUSES, 0)
    for entry in companies.values():
        for status, n in entry.by_status.items():
            totals[status] = totals.get(status, 0) + n
    ages = [c.oldest_pending_age_seconds for c in companies.values() if c.oldest_pending_age_seconds is not None]
    dagster: DagsterQueueOut | None = None
    reason: str | None = None
    try:
        counts = DagsterClient.from_settings(settings).run_counts()
        dagster = DagsterQueueOut(queued=counts.queued, in_progress=counts.in_progress)
    except DagsterUnavailable as exc:
        reason = str(exc)
    ordered = sorted(
        companies.values(), key=lambda c: (-(c.oldest_pending_age_seconds or -1.0), c.company_name, str(c.company_id))
    )
    return QueueStatsOut(
        database_connections=budget.check(session.connection(), settings),
        by_status=totals,
        total=sum(totals.values()),
        oldest_pending_age_seconds=max(ages) if ages else None,
        companies=ordered,
        dagster=dagster,
        dagster_unavailable_reason=reason,
    )


def clear_queues(session: Session, settings: Settings, *, actor: str) -> ClearQueuesOut:
    """Cancel every queued Dagster run. Routings are not touched: whatever a cancelled run would have delivered
    is still `pending` in PostgreSQL, and the sensor requests fresh runs for it. Audit-logged.

    Raises DagsterUnavailable when the webserver cannot be reached (nothing was cancelled)."""
    queued, result = DagsterClient.from_settings(settings).cancel_queued_runs()
    by_id = {r.run_id: r for r in queued}
    cancelled = [
        CancelledRunOut(run_id=r.run_id, job_name=r.job_name, partition=r.partition, tags=r.tags)
        for r in (by_id[i] for i in result.cancelled if i in by_id)
    ]
    audit.record(
        session,
        actor=actor,
        action="dagster.queue_cleared",
        entity_type="dagster_run",
        details={
            "cancelled": [c.run_id for c in cancelled][:1000],
            "failed": dict(list(result.failed.items())[:100]),
            "queued_seen": len(queued),
        },
    )
    message = (
        f"cancelled {len(cancelled)} queued run(s)"
        + (f"; {len(result.failed)} could not be cancelled (already launched?)" if result.failed else "")
        + ". Routings are unchanged: pending work stays pending and the sensor requests fresh runs."
    )
    return ClearQueuesOut(cancelled=cancelled, failed=result.failed, routings_changed=0, message=message)


# --------------------------------------------------------------------------------------------------------------
# rate limits
# --------------------------------------------------------------------------------------------------------------

# the rate in force (delivery/ratelimit.py `_EFFECTIVE_RATE`), and the GCRA bucket's tokens available now:
# clamp((now - (next_slot_at - burst / rate)) * rate, 0, burst); none while a Retry-After backoff runs
_RATE_LIMITS = text(
    f"""
    WITH rl AS (
        SELECT *, least(rate, current_rate + rate * :recovery *
                    greatest(0, extract(epoch FROM clock_timestamp()
                                        - coalesce(last_throttled_at, clock_timestamp())))) AS eff
          FROM provider_rate_limits
    ), throttled AS (
        SELECT pc.provider, pc.account_id, count(*) AS n
          FROM sync_attempts a
          JOIN job_routings r ON r.id = a.routing_id
          JOIN provider_connections pc ON pc.company_id = r.receiving_company_id
         WHERE a.outcome = '{AttemptOutcome.rate_limited}' AND a.started_at > now() - interval '1 hour'
         GROUP BY pc.provider, pc.account_id
    )
    SELECT rl.provider, rl.account_id, rl.rate, rl.burst, rl.eff AS current_rate, rl.next_slot_at,
           rl.backoff_until, rl.requests_total, rl.throttled_total, rl.last_throttled_at,
           greatest(0, extract(epoch FROM rl.backoff_until - clock_timestamp())) AS backoff_left,
           CASE WHEN rl.backoff_until > clock_timestamp() THEN 0
                ELSE least(rl.burst::float8, greatest(0::float8,
                     extract(epoch FROM clock_timestamp() - (rl.next_slot_at
                                          - make_interval(secs => rl.burst / rl.eff)))::float8 * rl.eff))
           END AS tokens,
           coalesce(t.n, 0) AS throttled_hour,
           coalesce((SELECT array_agg(c.name ORDER BY c.name)
                       FROM provider_connections pc JOIN companies c ON c.id = pc.company_id
                      WHERE pc.provider = rl.provider AND pc.account_id = rl.account_id), '{{}}') AS companies
      FROM rl LEFT JOIN throttled t ON t.provider = rl.provider AND t.account_id = rl.account_id
     ORDER BY rl.provider, rl.account_id
    """  # noqa: S608 - state names from the domain enums only
)


def rate_limits(session: Session, settings: Settings) -> list[RateLimitOut]:
    """Every (provider, account) budget the limiter keeps in PostgreSQL, as every process sees it now."""
    rows = session.execute(_RATE_LIMITS, {"recovery": settings.rate_limit_recovery_per_second}).mappings()
    return [
        RateLimitOut(
            provider=r["provider"],
            account_id=r["account_id"],
            companies=list(r["companies"] or []),
            rate=round(float(r["rate"]), 3),
            burst=int(r["burst"]),
            current_rate=round(float(r["current_rate"]), 3),
            tokens_available=round(float(r["tokens"] or 0), 2),
            next_slot_at=r["next_slot_at"],
            backoff_until=r["backoff_until"],
            backoff_seconds_left=round(float(r["backoff_left"] or 0), 1),
            requests_total=int(r["requests_total"]),
            throttled_total=int(r["throttled_total"]),
            last_throttled_at=r["last_throttled_at"],
            rate_limited_last_hour=int(r["throttled_hour"]),
        )
        for r in rows
    ]


# --------------------------------------------------------------------------------------------------------------
# companies and connections
# --------------------------------------------------------------------------------------------------------------


def _summary(company: Company) -> ConnectionSummary:
    conns = sorted(company.connections, key=lambda c: (not c.enabled, c.provider))
    if not conns:
        return ConnectionSummary(configured=False, enabled=False)
    c = conns[0]
    return ConnectionSummary(
        configured=True,
        enabled=c.enabled,
        provider=c.provider,
        environment=c.environment,
        account_id=c.account_id,
        delivery_mode=c.delivery_mode,
        health=c.health,
    )


def company_out(company: Company, technicians: int) -> CompanyOut:
    return CompanyOut(
        id=company.id,
        name=company.name,
        partition_key=company.partition_key,
        trade=company.trade,
        active=company.active,
        service_zip_codes=list(company.service_zip_codes),
        timezone=company.timezone,
        skills=[SkillOut(skill=s.skill, level=s.level, primary=s.is_primary) for s in company.skills],
        technicians=technicians,
        provider=_summary(company),
        created_at=company.created_at,
        updated_at=company.updated_at,
    )


def _tech_counts(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = session.execute(
        select(Technician.company_id, func.count())
        .where(Technician.company_id.in_(ids), Technician.active.is_(True))
        .group_by(Technician.company_id)
    ).all()
    return {cid: int(n) for cid, n in rows}


def list_companies(
    session: Session, *, active: bool | None = None, limit: int = 500, offset: int = 0
) -> tuple[list[CompanyOut], int]:
    query = select(Company)
    if active is not None:
        query = query.where(Company.active.is_(active))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    companies = session.scalars(
        query.options(selectinload(Company.skills), selectinload(Company.connections))
        .order_by(Company.name, Company.id)
        .limit(limit)
        .offset(offset)
    ).all()
    counts = _tech_counts(session, [c.id for c in companies])
    return [company_out(c, counts.get(c.id, 0)) for c in companies], int(total)


def get_company(session: Session, company_id: uuid.UUID) -> CompanyDetailOut:
    from integration_core.errors import NotFound

    company = session.scalars(
        select(Company)
        .where(Company.id == company_id)
        .options(selectinload(Company.skills), selectinload(Company.connections), selectinload(Company.technicians))
        .execution_options(populate_existing=True)  # as stored, even right after a change in this session
    ).one_or_none()
    if company is None:
        raise NotFound("company", company_id)
    techs = sorted(company.technicians, key=lambda t: (t.name, str(t.id)))
    base = company_out(company, sum(1 for t in techs if t.active))
    return CompanyDetailOut(**base.model_dump(), technician_list=[TechnicianOut.model_validate(t) for t in techs])


def list_providers(session: Session, settings: Settings) -> list[ProviderOut]:
    """Every provider connection with its health, mode and last success/failure; secrets masked or absent."""
    rows = session.execute(
        select(ProviderConnection, Company.name)
        .join(Company, Company.id == ProviderConnection.company_id)
        .order_by(Company.name, ProviderConnection.provider)
    ).all()
    key = settings.secret_key.get_secret_value()
    return [ProviderOut(**connection_out(conn, key).model_dump(), company_name=name) for conn, name in rows]
