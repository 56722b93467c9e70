"""Leases end with their run: what a run holds goes back as soon as the run is over, not when the lease expires.

A delivery run leases the routings it claims (`lease_owner` = the Dagster run id). However the run ends —
success, an exception, a cancel from the UI, SIGTERM, or its worker found dead by run monitoring — `release_run`
hands back every routing it still holds, in one fenced statement (`lease_version` is bumped, so a late write-back
of that run changes nothing):

- claimed and never sent (no delivery attempt of the run in flight) → `pending`, due now, no attempt counted;
- a delivery request may have left (an attempt still `in_flight`) → `needs_reconcile`: the record is looked up
  by its marker before anything is sent again, and not before that request could still be landing: a request
  timeout after now when the holder is known to have stopped, else after the lease the holder may still be
  using (its requests never outlive it: the engine starts none its lease would not cover).

What a run holds is found through its claims' receipts (`routing_claims`): a claim writes only the lease columns,
which no index names, so that its update is HOT (migration 0010); a routing leased and not yet written still reads
`pending` / `needs_reconcile` and is simply given back (its lease cleared, due now).

`expire_leases` is the fallback for a holder nobody saw end (a worker on another host, a lost database
connection): leases of started (`claimed`) routings that ran out go to `needs_reconcile`; a routing leased and never
written is due again as soon as its lease has run out, without anyone's help.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Connection, text

from integration_core.delivery.claims import held_status
from integration_core.domain import AttemptOutcome, RoutingStatus

# A receipt is kept at least this long (seconds) before `expire_leases` may drop it as holding nothing: a run's
# release drops its own at once; this is for owners nobody releases (a process outside Dagster, a lost host).
RECEIPT_SECONDS = 600

# What an owner holds: the routings that still name it as their lease owner and are `claimed` (the run wrote to
# them; found through ix_job_routings_claimed), or are on one of its claims' receipts (`routing_claims`) and still
# `pending` / `needs_reconcile` (leased, not written yet: the claim writes only the lease, delivery/claims.py).
# Written as ids first, then the rows by primary key: with the two conditions OR-ed in one WHERE, the planner scanned
# every due routing (measured: 17.8 ms at 100,000 due, against 0.2 ms).
_HELD = f"""
    r.id IN (SELECT c.id FROM job_routings c WHERE c.status = '{RoutingStatus.claimed}' AND c.lease_owner = :owner
             UNION ALL
             SELECT unnest(routing_ids) FROM receipts)
    AND r.lease_owner = :owner
    AND {held_status("r")}
"""

_RELEASE_RUN = text(
    f"""
    WITH receipts AS (
        DELETE FROM routing_claims WHERE owner = :owner RETURNING routing_ids
    ), held AS (
        SELECT r.id, r.lease_expires_at, r.status,
               EXISTS (SELECT 1 FROM sync_attempts a
                        WHERE a.routing_id = r.id AND a.run_id = :owner AND a.operation = 'deliver'
                          AND a.outcome = '{AttemptOutcome.in_flight}') AS maybe_sent
          FROM job_routings r
         WHERE {_HELD}
           FOR UPDATE OF r
    ), released AS (
        UPDATE job_routings r
           SET status = CASE WHEN held.maybe_sent THEN '{RoutingStatus.needs_reconcile}'
                             WHEN held.status = '{RoutingStatus.claimed}' THEN '{RoutingStatus.pending}'
                             ELSE held.status END,
               lookup_required = r.lookup_required OR held.maybe_sent,
               next_attempt_at = CASE
                   WHEN NOT held.maybe_sent THEN clock_timestamp()
                   WHEN :holder_stopped THEN clock_timestamp() + make_interval(secs => :in_flight_s)
                   ELSE greatest(clock_timestamp(), held.lease_expires_at) + make_interval(secs => :delay_s)
               END,
               lease_owner = NULL, lease_expires_at = NULL, lease_version = r.lease_version + 1,
               last_error_code = CASE WHEN held.maybe_sent THEN 'run_ended' ELSE r.last_error_code END,
               last_error_message = CASE WHEN held.maybe_sent
                   THEN 'the run ended while a request of this routing may have been in flight: '
                        || 'it is looked up before any resend'
                   ELSE r.last_error_message END
          FROM held
         WHERE r.id = held.id
        RETURNING r.id, held.maybe_sent
    ), closed AS (
        UPDATE sync_attempts a
           SET outcome = '{AttemptOutcome.abandoned}', finished_at = clock_timestamp()
          FROM released
         WHERE a.routing_id = released.id AND a.run_id = :owner AND a.outcome = '{AttemptOutcome.in_flight}'
        RETURNING a.id
    )
    SELECT count(*) FILTER (WHERE NOT maybe_sent) AS to_pending,
           count(*) FILTER (WHERE maybe_sent) AS to_reconcile,
           (SELECT count(*) FROM closed) AS attempts_abandoned
      FROM released
    """
)

# Leases of routings a run has started (`claimed`) that ran out. A routing leased and never written needs nothing
# here: once its lease has run out it is due again (the claim skips live leases only), and no request of it can
# have left. Receipts whose routings are no longer held by their owner (released, written back, or taken over
# after their lease ran out) go too, once they are older than a lease could be without its run's release.
EXPIRE_LEASES = text(
    f"""
    WITH expired AS (
        UPDATE job_routings
           SET status = '{RoutingStatus.needs_reconcile}', lookup_required = true,
               lease_owner = NULL, lease_expires_at = NULL,
               lease_version = lease_version + 1, next_attempt_at = clock_timestamp(),
               last_error_code = 'lease_expired',
               last_error_message = 'the run holding this routing stopped before writing back its outcome'
         WHERE status = '{RoutingStatus.claimed}' AND lease_expires_at < clock_timestamp()
        RETURNING id
    ), closed AS (
        UPDATE sync_attempts a SET outcome = '{AttemptOutcome.abandoned}', finished_at = clock_timestamp()
          FROM expired
         WHERE a.routing_id = expired.id AND a.outcome = '{AttemptOutcome.in_flight}'
        RETURNING a.id
    ), stale AS (
        DELETE FROM routing_claims rc
         WHERE rc.claimed_at < clock_timestamp() - make_interval(secs => :receipt_s)
           AND NOT EXISTS (
               SELECT 1 FROM job_routings r
                WHERE r.id = ANY(rc.routing_ids) AND r.lease_owner = rc.owner
                  AND (r.status = '{RoutingStatus.claimed}' OR r.lease_expires_at >= clock_timestamp()))
    )
    SELECT id FROM expired
    """
).bindparams(receipt_s=RECEIPT_SECONDS)

# every holder of a lease has a receipt until its leases are released
_LEASE_OWNERS = text(
    f"""
    SELECT owner FROM routing_claims
    UNION
    SELECT lease_owner FROM job_routings WHERE status = '{RoutingStatus.claimed}'
    """
)


class Released(BaseModel):
    """What `release_run` handed back."""

    owner: str
    to_pending: int = 0
    to_reconcile: int = 0
    attempts_abandoned: int = 0

    @property
    def total(self) -> int:
        return self.to_pending + self.to_reconcile


def release_run(
    conn: Connection,
    owner: str,
    *,
    holder_stopped: bool,
    request_timeout_seconds: float,
    reconcile_delay_seconds: float,
) -> Released:
    """Hand back every routing `owner` (a run id) still holds; runs in the caller's transaction.

    `holder_stopped`: the holder can send nothing more (its event loop has ended, or its worker process is
    dead); a request it had in flight is then looked up one request timeout later. Otherwise the lookup waits
    until the holder's lease has run out."""
    row = (
        conn.execute(
            _RELEASE_RUN,
            {
                "owner": owner,
                "holder_stopped": holder_stopped,
                "in_flight_s": request_timeout_seconds + reconcile_delay_seconds,
                "delay_s": reconcile_delay_seconds,
            },
        )
        .mappings()
        .one()
    )
    return Released(owner=owner, **row)


def expire_leases(conn: Connection) -> list[str]:
    """Leases that ran out → `needs_reconcile` (their in-flight attempts closed as abandoned)."""
    return [str(r[0]) for r in conn.execute(EXPIRE_LEASES)]


def lease_owners(conn: Connection) -> set[str]:
    """Who holds leases now (run ids; bounded by the runs in progress)."""
    return {str(r[0]) for r in conn.execute(_LEASE_OWNERS)}
