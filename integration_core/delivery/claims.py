"""Claiming due routings of one receiving company with a lease (`FOR UPDATE SKIP LOCKED`).

The claim is the hot path of every delivery run: it must not grow with the backlog (docs/architecture.md).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from integration_core.domain import DUE_ROUTING_STATUSES, RoutingStatus
from integration_core.providers.base import DeliveryRequest


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    lease_version: int
    attempts: int
    lookup_required: bool
    request: DeliveryRequest
    # local monotonic time by which this run must have finished with the routing (its lease, less a margin)
    deadline: float = float("inf")

    @property
    def sensitive(self) -> list[str]:
        return self.request.sensitive_values()


# The statuses are written into the statement as literals (one statement per set, built from RoutingStatus values
# only), never bound as `status = ANY(:statuses)`: the planner can match a literal predicate to a partial index,
# not a parameter. The default set is exactly the predicate of `ix_job_routings_due` (receiving_company_id,
# next_attempt_at, sequence) WHERE status IN ('pending', 'needs_reconcile'), so the scan walks that index in claim
# order and stops after `limit` lockable rows: no sort of the company's due rows, whatever the backlog. The
# reconcile job's `needs_reconcile` alone is served by `ix_job_routings_claim` (company, status, next_attempt_at).
_CLAIM_TEMPLATE = f"""
    WITH due AS (
        SELECT id, status AS prev_status
          FROM job_routings
         WHERE receiving_company_id = :company
           AND {{status_predicate}}
           AND next_attempt_at <= now()
         ORDER BY next_attempt_at, sequence
         LIMIT :limit
           FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE job_routings r
           SET status = '{RoutingStatus.claimed}',
               lease_owner = :owner,
               lease_expires_at = now() + make_interval(secs => :lease),
               lease_version = r.lease_version + 1,
               lookup_required = r.lookup_required OR due.prev_status = '{RoutingStatus.needs_reconcile}'
          FROM due
         WHERE r.id = due.id
        RETURNING r.id, r.lease_version, r.attempts, r.lookup_required, r.job_id, r.created_at
    )
    -- the jobs' delivery fields in the same round trip
    SELECT claimed.id, claimed.lease_version, claimed.attempts, claimed.lookup_required, claimed.created_at,
           j.summary, j.street, j.unit, j.city, j.state, j.zip_code, j.country, j.homeowner_name,
           j.homeowner_phone, j.homeowner_email, j.category, c.name AS referrer
      FROM claimed
      JOIN jobs j ON j.id = claimed.job_id
      JOIN companies c ON c.id = j.created_by_company_id
    """


@functools.cache
def _claim_statement(statuses: frozenset[RoutingStatus]) -> TextClause:
    literals = [f"'{s.value}'" for s in RoutingStatus if s in statuses]  # enum values only: safe as literals
    predicate = f"status = {literals[0]}" if len(literals) == 1 else f"status IN ({', '.join(literals)})"
    return text(_CLAIM_TEMPLATE.format(status_predicate=predicate))


async def claim(
    engine: AsyncEngine,
    company_id: uuid.UUID,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    statuses: Iterable[str] = DUE_ROUTING_STATUSES,
) -> list[Claimed]:
    """Lease up to `limit` due routings of one company, oldest first. Concurrent claimers never share a row."""
    wanted = frozenset(RoutingStatus(s) for s in statuses)  # ValueError on a status that does not exist
    if not wanted:
        return []
    statement = _claim_statement(wanted)
    claimed_at = time.monotonic()
    async with engine.begin() as conn:
        rows = (
            (
                await conn.execute(
                    statement,
                    {
                        "company": company_id,
                        "limit": limit,
                        "owner": owner,
                        "lease": lease_seconds,
                    },
                )
            )
            .mappings()
            .all()
        )
    claimed = []
    for r in rows:
        claimed.append(
            Claimed(
                id=r["id"],
                lease_version=r["lease_version"],
                attempts=r["attempts"],
                lookup_required=r["lookup_required"],
                request=DeliveryRequest(
                    routing_id=r["id"],
                    summary=r["summary"],
                    street=r["street"],
                    unit=r["unit"],
                    city=r["city"],
                    state=r["state"],
                    zip=r["zip_code"],
                    country=r["country"],
                    homeowner_name=r["homeowner_name"],
                    homeowner_phone=r["homeowner_phone"],
                    homeowner_email=r["homeowner_email"],
                    category=r["category"],
                    referring_company_name=r["referrer"],
                    created_at=r["created_at"],
                ),
                deadline=claimed_at + lease_seconds * 0.9,
            )
        )
    # oldest first, as claimed (RETURNING order is not guaranteed)
    order = {r["id"]: i for i, r in enumerate(sorted(rows, key=lambda r: r["created_at"]))}
    claimed.sort(key=lambda c: order[c.id])
    return claimed
