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
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from integration_core.delivery.connections import ProviderFactory, enabled_connection, open_connection
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
    cursor: datetime | None = None
    error: str | None = None
    statuses: dict[str, int] = field(default_factory=dict)


_FIND_ROUTING = text(
    """
    SELECT id, job_id, external_status, external_refs FROM job_routings
     WHERE receiving_company_id = :company AND status = 'synced'
       AND (id = :marker OR (external_id = :external_id AND external_refs->>'kind' = :kind))
     ORDER BY (id = :marker) DESC NULLS LAST
     LIMIT 1
     FOR UPDATE
    """
)
_UPDATE_ROUTING = text(
    """
    UPDATE job_routings
       SET external_status = :status, completed_at = coalesce(:completed_at, completed_at),
           revenue = coalesce(:revenue, revenue), external_refs = external_refs || :refs
     WHERE id = :id
    """
).bindparams(bindparam("refs", type_=JSONB))
_COMPLETE_JOB = text(
    """
    UPDATE jobs SET status = 'completed', completed_at = coalesce(completed_at, :completed_at, clock_timestamp())
     WHERE id = :job_id AND status <> 'completed'
    """
)
_CANCEL_JOB_IF_ALL_FINAL = text(
    """
    UPDATE jobs SET status = 'canceled'
     WHERE id = :job_id AND status = 'routed'
       AND NOT EXISTS (
           SELECT 1 FROM job_routings r WHERE r.job_id = :job_id
              AND (r.external_status IS NULL OR r.external_status NOT IN ('canceled', 'dismissed')))
    """
)
_OLDEST_SYNC = text(
    "SELECT min(synced_at) FROM job_routings WHERE receiving_company_id = :company AND status = 'synced'"
)
_SET_CURSOR = text("UPDATE provider_connections SET updates_cursor = :cursor WHERE id = :id")


async def _apply(conn: AsyncConnection, company_id: uuid.UUID, u: ExternalUpdate, summary: PullSummary) -> None:
    row = (
        (
            await conn.execute(
                _FIND_ROUTING,
                {"company": company_id, "marker": u.marker, "external_id": u.external_id, "kind": u.kind},
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        summary.unmatched += 1
        return
    refs: dict[str, Any] = {str(k): v for k, v in u.refs.items()}
    current_source = (row["external_refs"] or {}).get("status_source")
    status = u.external_status
    if u.read_from == "booking" and current_source == "job":
        status = row["external_status"]  # the job converted from our booking speaks for it now
    else:
        refs["status_source"] = u.read_from
    await conn.execute(
        _UPDATE_ROUTING,
        {"id": row["id"], "status": status, "completed_at": u.completed_at, "revenue": u.revenue, "refs": refs},
    )
    summary.routings_updated += 1
    summary.statuses[status] = summary.statuses.get(status, 0) + 1
    if status == "completed":
        done = await conn.execute(_COMPLETE_JOB, {"job_id": row["job_id"], "completed_at": u.completed_at})
        summary.jobs_completed += int(getattr(done, "rowcount", 0) or 0)
    elif status in ("canceled", "dismissed"):
        await conn.execute(_CANCEL_JOB_IF_ALL_FINAL, {"job_id": row["job_id"]})


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
            await _apply(conn, company_id, update, summary)
        await conn.execute(_SET_CURSOR, {"id": row.id, "cursor": batch.cursor})
    summary.cursor = batch.cursor
    return summary
