"""Claiming due routings of one receiving company with a lease (`FOR UPDATE SKIP LOCKED`).

The claim is the hot path of every delivery run: it must not grow with the backlog (docs/architecture.md).
"""

from __future__ import annotations

import functools
import operator
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


def unleased(alias: str = "") -> str:
    """SQL: no run holds a live lease on the routing. A claim writes only the lease (below), so a due routing a run
    has leased and not started still reads `pending` / `needs_reconcile`: the claim, the drain's next-due check and
    the queue statistics skip it with this."""
    col = f"{alias}." if alias else ""
    return f"({col}lease_owner IS NULL OR {col}lease_expires_at < now())"


def held_status(alias: str = "") -> str:
    """SQL: a status a routing a run holds can have: `claimed` once the run wrote to it, else still `pending` /
    `needs_reconcile` (leased and not started). The run's fenced writes and its release accept these."""
    col = f"{alias}." if alias else ""
    literals = ", ".join(f"'{s.value}'" for s in (RoutingStatus.claimed, *DUE_ROUTING_STATUSES))
    return f"{col}status IN ({literals})"


# The statuses are written into the statement as literals (one statement per set, built from RoutingStatus values
# only), never bound as `status = ANY(:statuses)`: the planner can match a literal predicate to a partial index,
# not a parameter. The default set is exactly the predicate of `ix_job_routings_due` (receiving_company_id,
# next_attempt_at, sequence) WHERE status IN ('pending', 'needs_reconcile'), so the scan walks that index in claim
# order and stops after `limit` lockable rows: no sort of the company's due rows, whatever the backlog. The
# reconcile job's `needs_reconcile` alone is served by `ix_job_routings_claim` (company, status, next_attempt_at).
#
# The job's delivery fields are read in `due`, under the same Limit: one primary-key probe of jobs (and of the
# referring company, memoized) per routing picked, so the cost is the batch's whatever the size of `jobs` (joined
# after the UPDATE instead, the planner hashed the whole jobs table when it was small enough). `FOR UPDATE OF r`
# locks the routings only.
#
# The claim writes the lease and nothing else (migration 0010): `status` stays `pending` / `needs_reconcile` until
# the run's first write to the routing (engine._RECORD_ATTEMPT) makes it `claimed`. No index names a lease column
# and `updated_at` is left alone by a lease-only update, so the UPDATE is HOT: a new row version on the same page and
# no index entry, where setting `status` cost an entry in six indexes (docs/scaling.md). A routing leased and not yet
# written is skipped by other claimers while its lease runs (`lease_expires_at`; the heartbeat extends it), and due
# again once the lease has run out: its holder never started a request, so nothing is to be looked up. The claim
# leaves a receipt (`routing_claims`) so that the run-end release and the sensor can find what an owner leased.
_CLAIM_TEMPLATE = f"""
    WITH due AS (
        SELECT r.id, r.status AS prev_status, r.created_at,
               j.summary, j.street, j.unit, j.city, j.state, j.zip_code, j.country, j.homeowner_name,
               j.homeowner_phone, j.homeowner_email, j.category, c.name AS referrer
          FROM job_routings r
          JOIN jobs j ON j.id = r.job_id
          JOIN companies c ON c.id = j.created_by_company_id
         WHERE r.receiving_company_id = :company
           AND r.{{status_predicate}}
           AND r.next_attempt_at <= now()
           AND {unleased("r")}
         ORDER BY r.next_attempt_at, r.sequence
         LIMIT :limit
           FOR UPDATE OF r SKIP LOCKED
    ), claimed AS (
        UPDATE job_routings r
           SET lease_owner = :owner,
               lease_expires_at = now() + make_interval(secs => :lease),
               lease_version = r.lease_version + 1
          FROM due
         WHERE r.id = due.id
        RETURNING r.id, r.lease_version, r.attempts,
                  r.lookup_required OR due.prev_status = '{RoutingStatus.needs_reconcile}' AS lookup_required
    ), receipt AS (
        INSERT INTO routing_claims (owner, company_id, routing_ids)
        SELECT :owner, :company, array_agg(claimed.id) FROM claimed HAVING count(*) > 0
    )
    SELECT claimed.id, claimed.lease_version, claimed.attempts, claimed.lookup_required,
           claimed.id, due.summary, due.street, due.city, due.state, due.zip_code, due.homeowner_name, due.created_at,
           due.unit, due.country, due.homeowner_phone, due.homeowner_email, due.category, due.referrer
      FROM claimed
      JOIN due ON due.id = claimed.id
    """


@functools.cache
def _claim_statement(statuses: frozenset[RoutingStatus]) -> TextClause:
    literals = [f"'{s.value}'" for s in RoutingStatus if s in statuses]  # enum values only: safe as literals
    predicate = f"status = {literals[0]}" if len(literals) == 1 else f"status IN ({', '.join(literals)})"
    return text(_CLAIM_TEMPLATE.format(status_predicate=predicate))


# Claimed and DeliveryRequest are frozen dataclasses: their generated __init__ sets each of the 20 fields through
# object.__setattr__, which is most of the Python-side cost of a 200-routing claim. The claim fills every field
# itself, so it builds them by filling the instance dict instead: the same objects (equal, hashable, frozen), about
# a third of the cost. The two lists below name the fields in the order of the statement's columns (the first four
# are Claimed's, the rest the request's) and are checked against the dataclasses by tests/delivery/test_hot_queries.py:
# this is only valid while both stay plain dataclasses whose every field the claim sets (no __post_init__, no
# __slots__).
_CLAIMED_FIELDS = ("id", "lease_version", "attempts", "lookup_required", "request", "deadline")
_REQUEST_FIELDS = (
    "routing_id",
    "summary",
    "street",
    "city",
    "state",
    "zip",
    "homeowner_name",
    "created_at",
    "unit",
    "country",
    "homeowner_phone",
    "homeowner_email",
    "category",
    "referring_company_name",
)
_FAST_BUILD_FIELDS = {Claimed: _CLAIMED_FIELDS, DeliveryRequest: _REQUEST_FIELDS}
_new = object.__new__
_CREATED_AT = operator.attrgetter("request.created_at")


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
    # One statement, so its own transaction (autocommit): one round trip, not three (BEGIN, the claim, COMMIT).
    # The locks it takes are held until it ends, which is its commit: the same as inside BEGIN ... COMMIT.
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        result = await conn.execute(
            statement, {"company": company_id, "limit": limit, "owner": owner, "lease": lease_seconds}
        )
        rows: Sequence[Any] = result.all()
    deadline = claimed_at + lease_seconds * 0.9
    claimed: list[Claimed] = []
    for row in rows:
        request = _new(DeliveryRequest)
        request.__dict__.update(zip(_REQUEST_FIELDS, row[4:], strict=True))
        leased = _new(Claimed)
        leased.__dict__.update(zip(_CLAIMED_FIELDS, (*row[:4], request, deadline), strict=True))
        claimed.append(leased)
    # oldest first, as claimed (the statement's row order is not guaranteed); stable, as before
    claimed.sort(key=_CREATED_AT)
    return claimed
