"""Follow delivered work: pull status, completion and revenue from the provider, write them back.

Incremental: from the connection's cursor (`provider_connections.updates_cursor`), all pages. The cursor moves
only after the writes it covers have committed, so a crash re-reads (updates are idempotent) instead of skipping.
The job itself is completed when one of its routed jobs completes (the old system never wrote this back).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from integration_core.delivery.connections import ProviderFactory, enabled_connection, open_connection
from integration_core.domain import JobStatus, RoutingStatus
from integration_core.providers.base import ExternalUpdate, ProviderError
from integration_core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_FIRST_LOOKBACK = timedelta(days=1)


@dataclass
class PullSummary:
    company_id: uuid.UUID
    updates_seen: int = 0
    routings_updated: int = 0
    jobs_completed: int = 0
    unmatched: int = 0
    # updates that changed a routing: nothing (no webhook, no earlier pull) had told us yet
    changes_not_from_webhooks: int = 0
    cursor: datetime | None = None
    error: str | None = None
    statuses: dict[str, int] = field(default_factory=dict)


_COLUMNS = "SELECT id, job_id, external_status, external_refs, completed_at, revenue FROM job_routings"
_MATCH = f"""
       AND status = '{RoutingStatus.synced}'
       AND (id = :marker OR (external_id = :external_id AND external_refs->>'kind' = :kind){{job_ref}})
     ORDER BY (id = :marker) DESC NULLS LAST
     LIMIT 1
     FOR UPDATE
"""
_BY_JOB_REF = " OR external_refs->>'job_id' = :job_ref"  # ix_job_routings_job_ref (migration 0004)
_FIND_ROUTING = text(f"{_COLUMNS} WHERE receiving_company_id = :company {_MATCH.format(job_ref='')}")
_FIND_ROUTING_BY_JOB_REF = text(
    f"{_COLUMNS} WHERE receiving_company_id = :company {_MATCH.format(job_ref=_BY_JOB_REF)}"
)
# an event that names no connection (the generic webhook without ?connection=, development only): a routing of any
# company, but only of a company connected to the provider the event names (it never moves another provider's)
_FIND_ROUTING_ANY_COMPANY = text(
    f"""{_COLUMNS} WHERE EXISTS (SELECT 1 FROM provider_connections pc
                                 WHERE pc.company_id = job_routings.receiving_company_id AND pc.provider = :provider)
    {_MATCH.format(job_ref=_BY_JOB_REF)}"""
)
_UPDATE_ROUTING = text(
    """
    UPDATE job_routings
       SET external_status = :status, completed_at = :completed_at, revenue = :revenue, external_refs = :refs
     WHERE id = :id
    """
).bindparams(bindparam("refs", type_=JSONB))
_COMPLETE_JOB = text(
    f"""
    UPDATE jobs SET status = '{JobStatus.completed}',
           completed_at = coalesce(completed_at, :completed_at, clock_timestamp())
     WHERE id = :job_id AND status <> '{JobStatus.completed}'
    """
)
_CANCEL_JOB_IF_ALL_FINAL = text(
    f"""
    UPDATE jobs SET status = '{JobStatus.canceled}'
     WHERE id = :job_id AND status = '{JobStatus.routed}'
       AND NOT EXISTS (
           SELECT 1 FROM job_routings r WHERE r.job_id = :job_id
              AND (r.external_status IS NULL OR r.external_status NOT IN ('canceled', 'dismissed')))
    """
)
_OLDEST_SYNC = text(
    "SELECT min(synced_at) FROM job_routings WHERE receiving_company_id = :company "
    f"AND status = '{RoutingStatus.synced}'"
)
_SET_CURSOR = text("UPDATE provider_connections SET updates_cursor = :cursor WHERE id = :id")


ApplyOutcome = Literal["changed", "unchanged", "stale", "unmatched"]
# ordering stamps kept in external_refs: the provider time of the record the status / the revenue was read from
# and where the revenue came from (`revenue_source`): bookkeeping, not a change of the routing
_STAMPS = ("status_at", "revenue_at", "revenue_source")
# a ServiceTitan job's revenue summed from the invoice events in the webhook inbox (webhooks/apply.py); the pull
# writes REVENUE_FROM_PULL (every invoice of the job, read from the provider)
REVENUE_FROM_WEBHOOK_INVOICES = "webhook_invoices"
REVENUE_FROM_PULL = "pull"
REVENUE_FROM_EVENT = "webhook"  # any other event that carries a revenue (Housecall Pro's job total, generic)
# two observations of one record at the same instant: the later stage of the work wins, whichever arrives first
# (deterministic); a final status outranks any open one, completion outranks cancellation
_STATUS_ORDER = {
    s: i
    for i, s in enumerate(
        (
            "new",
            "accepted",
            "converted",
            "scheduled",
            "dispatched",
            "hold",
            "in_progress",
            "dismissed",
            "canceled",
            "completed",
        )
    )
}


@dataclass(frozen=True)
class Applied:
    """What :func:`apply_update` did: ``changed`` (the routing's status, completion, revenue or ids moved),
    ``unchanged`` (it already said this), ``stale`` (older than what the routing already has: nothing
    regressed) or ``unmatched`` (no delivered routing of ours)."""

    outcome: ApplyOutcome
    routing_id: uuid.UUID | None = None
    status: str | None = None
    jobs_completed: int = 0


def _stamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def apply_update(
    conn: AsyncConnection,
    company_id: uuid.UUID | None,
    u: ExternalUpdate,
    *,
    revenue_only: bool = False,
    job_ref: str | None = None,
    observed_at: datetime | None = None,
    provider: str | None = None,
) -> Applied:
    """Write one observed change back to its routing: the ONE path of the status pull and of webhook events.

    Idempotent and ordered: the status (and completion) of a routing moves only to an update at least as new
    (``modified_on``) as the one it came from, read from the same record (a job converted from our booking
    speaks for it; the booking's own status never overwrites the job's); the revenue moves only to a newer
    observation (a pull observes "now": ``observed_at``). Writing what the routing already says changes nothing.
    ``job_ref`` also matches a routing by the provider's job id in its refs (an invoice event knows only that);
    ``revenue_only`` leaves status and completion alone. Without ``company_id`` (an event that names no
    connection) only a routing of a company connected to ``provider`` matches (none when it is not given).
    The caller owns the transaction.
    """
    params: dict[str, Any] = {"marker": u.marker, "external_id": u.external_id, "kind": u.kind}
    source = str(u.refs.get("revenue_source") or REVENUE_FROM_EVENT)
    if company_id is None:
        if provider is None:
            return Applied("unmatched")
        found = await conn.execute(_FIND_ROUTING_ANY_COMPANY, {**params, "job_ref": job_ref, "provider": provider})
    elif job_ref is None:
        found = await conn.execute(_FIND_ROUTING, {**params, "company": company_id})
    else:
        found = await conn.execute(_FIND_ROUTING_BY_JOB_REF, {**params, "company": company_id, "job_ref": job_ref})
    row = found.mappings().first()
    if row is None:
        return Applied("unmatched")
    current_refs: dict[str, Any] = dict(row["external_refs"] or {})
    new_refs: dict[str, Any] = {str(k): v for k, v in u.refs.items() if k != "revenue_source"}
    status: str | None = row["external_status"]
    completed_at: datetime | None = row["completed_at"]
    revenue: Decimal | None = row["revenue"]
    modified_on = _utc(u.modified_on)
    stale = False
    if not revenue_only:
        current_source = current_refs.get("status_source")
        status_at = _stamp(current_refs.get("status_at"))
        if u.read_from in ("booking", "lead") and current_source == "job":
            pass  # the job converted from our booking (or lead) speaks for it now
        elif current_source == u.read_from and status_at is not None and modified_on < status_at:
            stale = True  # an older observation of the same record: never regress
        elif (
            current_source == u.read_from
            and status_at is not None
            and modified_on == status_at
            and _STATUS_ORDER.get(u.external_status, -1) < _STATUS_ORDER.get(str(status), -1)
        ):
            stale = True  # the same instant: the later stage wins whatever order the two arrive in
        else:
            status = u.external_status
            new_refs["status_source"] = u.read_from
            new_refs["status_at"] = modified_on.isoformat()
            if u.completed_at is not None:
                completed_at = u.completed_at
    if u.revenue is not None and not stale:
        key = max(modified_on, _utc(observed_at)) if observed_at is not None else modified_on
        revenue_at = _stamp(current_refs.get("revenue_at"))
        if revenue_at is not None and key < revenue_at:
            stale = stale or u.revenue != revenue
        elif u.revenue != revenue or revenue_at is None:
            revenue = u.revenue
            new_refs["revenue_at"] = key.isoformat()
            new_refs["revenue_source"] = REVENUE_FROM_PULL if observed_at is not None else source
    merged = {**current_refs, **new_refs}
    changed = (
        status != row["external_status"]
        or completed_at != row["completed_at"]
        or revenue != row["revenue"]
        or any(current_refs.get(k) != v for k, v in new_refs.items() if k not in _STAMPS)
    )
    if not changed:
        if merged != current_refs:  # a newer stamp for the same state: keep ordering exact, count no change
            await conn.execute(
                _UPDATE_ROUTING,
                {"id": row["id"], "status": status, "completed_at": completed_at, "revenue": revenue, "refs": merged},
            )
        return Applied("stale" if stale else "unchanged", row["id"], status)
    await conn.execute(
        _UPDATE_ROUTING,
        {"id": row["id"], "status": status, "completed_at": completed_at, "revenue": revenue, "refs": merged},
    )
    completed = 0
    if status != row["external_status"] or completed_at != row["completed_at"]:
        if status == "completed":
            done = await conn.execute(_COMPLETE_JOB, {"job_id": row["job_id"], "completed_at": completed_at})
            completed = int(getattr(done, "rowcount", 0) or 0)
        elif status in ("canceled", "dismissed"):
            await conn.execute(_CANCEL_JOB_IF_ALL_FINAL, {"job_id": row["job_id"]})
    return Applied("changed", row["id"], status, completed)


async def _apply(
    conn: AsyncConnection, company_id: uuid.UUID, u: ExternalUpdate, summary: PullSummary, observed_at: datetime
) -> None:
    result = await apply_update(conn, company_id, u, observed_at=observed_at)
    if result.outcome == "unmatched":
        summary.unmatched += 1
        return
    summary.routings_updated += 1
    if result.outcome == "changed":
        summary.changes_not_from_webhooks += 1
    if result.status:
        summary.statuses[result.status] = summary.statuses.get(result.status, 0) + 1
    summary.jobs_completed += result.jobs_completed


async def pull_updates(
    engine: AsyncEngine,
    settings: Settings,
    company_id: uuid.UUID,
    *,
    since: datetime | None = None,
    provider_factory: ProviderFactory | None = None,
) -> PullSummary:
    """Fetch every change since the connection's cursor (or `since`) and write it back."""
    summary = PullSummary(company_id=company_id)
    async with AsyncSession(engine) as session:
        row = await enabled_connection(session, company_id)
    if row is None:
        summary.error = "no enabled provider connection"
        return summary
    if since is None:
        since = row.updates_cursor
    if since is None:
        async with engine.connect() as conn:
            oldest = (await conn.execute(_OLDEST_SYNC, {"company": company_id})).scalar()
        since = (oldest - timedelta(minutes=5)) if oldest else datetime.now(UTC) - DEFAULT_FIRST_LOOKBACK
    live = open_connection(engine, row, settings, provider_factory)
    observed_at = datetime.now(UTC)
    try:
        batch = await live.provider.fetch_updates(since)
    except ProviderError as exc:
        summary.error = str(exc)
        log.warning("status pull for company %s failed: %s", company_id, exc.code)
        return summary
    finally:
        await live.aclose()
    summary.updates_seen = len(batch.updates)
    async with engine.begin() as conn:
        for update in sorted(batch.updates, key=lambda u: u.modified_on):
            await _apply(conn, company_id, update, summary, observed_at)
        await conn.execute(_SET_CURSOR, {"id": row.id, "cursor": batch.cursor})
    summary.cursor = batch.cursor
    return summary
