"""Apply the inbox: unapplied events → routings, through the status pull's own write path.

Batches are locked with ``FOR UPDATE SKIP LOCKED``, so any number of appliers (the sensor, `si webhooks
replay --apply`, a bench) can run at once without applying an event twice. A batch is taken in arrival order and
applied in the provider's order (``occurred_at``). Each event is applied in a savepoint:
one bad event is recorded (attempts, last_error; status `error` after WEBHOOK_MAX_APPLY_ATTEMPTS) and the
others go on. An event whose record we do not know becomes `unmatched` (kept, reported); it is queued again
when a later event of the same connection matches that record (a job event may arrive before the booking event
that tells us the job is ours).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from integration_core.db.engine import connect_args, resolve_database_url
from integration_core.delivery.updates import REVENUE_FROM_WEBHOOK_INVOICES, apply_update
from integration_core.domain import ProviderName, WebhookEventStatus
from integration_core.providers.base import redact
from integration_core.settings import Settings
from integration_core.webhooks import events

log = logging.getLogger(__name__)

IDLE_EXIT_SECONDS = 60.0  # the API's applier thread (and its one connection) ends after this long without events

_BATCH = text(
    f"""
    SELECT id, provider, company_id, payload, occurred_at, received_at, attempts FROM webhook_events
     WHERE status = '{WebhookEventStatus.received}'
     ORDER BY received_at, id
     LIMIT :limit
     FOR UPDATE SKIP LOCKED
    """  # noqa: S608 - state names from the domain enums only
)
_DONE = text(
    """
    UPDATE webhook_events SET status = :status, attempts = attempts + 1, last_error = :error,
           applied_at = clock_timestamp()
     WHERE id = :id
    """
)
_FAILED = text(
    "UPDATE webhook_events SET status = :status, attempts = attempts + 1, last_error = :error WHERE id = :id"
)
# the newest version of every invoice of one ServiceTitan job that the inbox has seen (any state: a stored event
# is a fact the provider told us, whether or not it was applied yet)
_JOB_INVOICES = text(
    f"""
    SELECT DISTINCT ON (payload->'data'->>'id')
           payload->'data'->>'total' AS total, lower(event_type) AS event_type, occurred_at
      FROM webhook_events
     WHERE provider = '{ProviderName.servicetitan}' AND company_id = :company AND external_id = :job
       AND lower(event_type) LIKE 'invoice.%'
     ORDER BY payload->'data'->>'id', occurred_at DESC NULLS LAST, id DESC
    """  # noqa: S608 - names from the domain enums only
)
_REQUEUE = text(
    f"""
    UPDATE webhook_events SET status = '{WebhookEventStatus.received}'
     WHERE status = '{WebhookEventStatus.unmatched}' AND company_id = :company AND external_id = ANY(:ids)
       AND id <> :id
    """  # noqa: S608 - state names from the domain enums only
)


@dataclass
class ApplySummary:
    events: int = 0
    applied: int = 0
    unmatched: int = 0
    errors: int = 0
    changed: int = 0  # routings whose state moved
    requeued: int = 0
    deferred: int = 0  # left queued without spending an attempt: the database was busy or unavailable
    by_provider: Counter[str] = field(default_factory=Counter)


async def _job_revenue(conn: AsyncConnection, company: uuid.UUID, change: events.Change) -> events.Change:
    """A ServiceTitan invoice event speaks for one invoice, but a job's revenue is the sum of its invoices (as
    the pull reads it). The revenue written is the sum of the newest version of every invoice of that job the
    inbox holds (a deleted/voided one counts 0), at the newest of their times; never one invoice's total alone.
    The status pull re-reads the job (its invoice changed since the pull's cursor) and its figure, observed
    later, wins if an invoice never reached us as a webhook (docs/webhooks.md)."""
    job = change.job_ref
    if job is None:
        return change
    rows = (await conn.execute(_JOB_INVOICES, {"company": company, "job": job})).mappings().all()
    total = Decimal("0.00")
    at = change.update.modified_on
    for r in rows:
        if r["occurred_at"] is not None:
            at = max(at, r["occurred_at"])
        if r["event_type"].endswith((".deleted", ".voided", ".void")):
            continue
        amount = events.money(r["total"])
        if amount is not None:
            total += amount
    refs = {**change.update.refs, "revenue_source": REVENUE_FROM_WEBHOOK_INVOICES}
    return dataclasses.replace(
        change, update=dataclasses.replace(change.update, revenue=total, modified_on=at, refs=refs)
    )


async def _apply_one(conn: AsyncConnection, row: Any, summary: ApplySummary) -> str:
    company: uuid.UUID | None = row["company_id"]
    todo = events.changes(row["provider"], row["payload"], received_at=row["received_at"])
    # an event of no connection (generic, development only) touches only routings of the provider it names
    named = row["payload"].get("provider") if company is None else None
    matched = False
    ids: set[str] = set()
    for change in todo:
        if row["provider"] == ProviderName.servicetitan and change.revenue_only and company is not None:
            change = await _job_revenue(conn, company, change)
        result = await apply_update(
            conn,
            company,
            change.update,
            revenue_only=change.revenue_only,
            job_ref=change.job_ref,
            provider=named if isinstance(named, str) else None,
        )
        if result.outcome == "unmatched":
            continue
        matched = True
        summary.changed += result.outcome == "changed"
        ids.add(change.update.external_id)
        ids.update(str(v) for k, v in change.update.refs.items() if k in ("job_id", "booking_id"))
        if change.job_ref:
            ids.add(change.job_ref)
    if matched and company is not None and ids:
        requeued = await conn.execute(_REQUEUE, {"company": company, "ids": sorted(ids), "id": row["id"]})
        summary.requeued += int(getattr(requeued, "rowcount", 0) or 0)
    return WebhookEventStatus.applied if matched or not todo else WebhookEventStatus.unmatched


def _in_provider_order(rows: Sequence[Any]) -> list[Any]:
    """A batch is taken in arrival order (so none waits behind newer ones) but applied in the order the provider
    says things happened: a provider retries a failed delivery minutes later and sends concurrently, so a job's
    invoice can arrive before the booking conversion that tells us the job is ours. Applied in arrival order the
    invoice would be `unmatched` first and requeued by the conversion; in the provider's order it simply matches.
    An event without a time of its own sorts by its arrival. Across batches the requeue still covers it."""
    return sorted(rows, key=lambda r: (r["occurred_at"] or r["received_at"], r["received_at"], r["id"]))


async def apply_inbox(
    engine: AsyncEngine, settings: Settings, *, batch_size: int | None = None, max_batches: int = 100
) -> ApplySummary:
    """Apply every unapplied event (up to ``max_batches`` batches); returns what happened."""
    limit = batch_size or settings.webhook_apply_batch_size
    summary = ApplySummary()
    for _ in range(max_batches):
        async with engine.begin() as conn:
            rows = _in_provider_order((await conn.execute(_BATCH, {"limit": limit})).mappings().all())
            requeued_before = summary.requeued
            deferred_before = summary.deferred
            for row in rows:
                summary.events += 1
                summary.by_provider[row["provider"]] += 1
                try:
                    async with conn.begin_nested():
                        status = await _apply_one(conn, row, summary)
                        error = (
                            None if status == WebhookEventStatus.applied else "no delivered routing matches this record"
                        )
                        await conn.execute(_DONE, {"id": row["id"], "status": status, "error": error})
                except DBAPIError as exc:
                    if not _transient(exc):
                        await _record_failure(conn, row, exc, settings, summary)
                        continue
                    # the database, not the event: no attempt is spent, the event stays queued (retried by the
                    # next run); a connection that is gone fails the next statement and the whole batch rolls back
                    log.warning("webhook event %s not applied (database busy or unavailable, retried)", row["id"])
                    summary.deferred += 1
                    continue
                except Exception as exc:  # one bad event never blocks the others
                    await _record_failure(conn, row, exc, settings, summary)
                    continue
                if status == WebhookEventStatus.applied:
                    summary.applied += 1
                else:
                    summary.unmatched += 1
        if summary.deferred > deferred_before:
            break  # the database is in trouble: the next run (API nudge or sensor tick) retries
        if len(rows) < limit and summary.requeued == requeued_before:
            break
    return summary


# SQLSTATE classes of the database's trouble, not the event's: connection exception, transaction rollback
# (deadlock, serialization), insufficient resources, operator intervention; and lock_not_available (lock_timeout)
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_STATES = ("55P03",)


def _transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
        return True
    state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
    return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES


async def _record_failure(
    conn: AsyncConnection, row: Any, exc: Exception, settings: Settings, summary: ApplySummary
) -> None:
    final = row["attempts"] + 1 >= settings.webhook_max_apply_attempts
    if isinstance(exc, DBAPIError):  # not SQLAlchemy's text: it quotes the statement's parameters
        first = str(exc.orig).splitlines()[0] if str(exc.orig) else ""
        message = redact(f"{type(exc.orig).__name__}: {first}")[:500]
    else:
        message = redact(f"{type(exc).__name__}: {exc}")[:500]
    log.warning("webhook event %s failed to apply: %s", row["id"], type(exc).__name__)
    await conn.execute(
        _FAILED,
        {
            "id": row["id"],
            "status": WebhookEventStatus.error if final else WebhookEventStatus.received,
            "error": message,
        },
    )
    summary.errors += 1


async def oldest_unapplied_age(engine: AsyncEngine) -> float | None:
    async with engine.connect() as conn:
        age = (
            await conn.execute(
                text(
                    "SELECT extract(epoch FROM now() - min(received_at)) FROM webhook_events "  # noqa: S608
                    f"WHERE status = '{WebhookEventStatus.received}'"
                )
            )
        ).scalar()
    return float(age) if age is not None else None


class InboxApplier:
    """Applies the inbox in the background of the process that stored the events (the API), right after the
    acknowledgement: `nudge()` returns at once; one applier thread runs `apply_inbox` until nothing is left.
    Best effort and idempotent (SKIP LOCKED): the webhook sensor applies whatever this misses (a crash, a
    database hiccup). WEBHOOK_APPLY_IN_API=false leaves it all to the sensor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.failures = 0

    def nudge(self) -> None:
        self._wake.set()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-applier", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        engine = create_async_engine(
            resolve_database_url(self.settings),
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args=connect_args(self.settings),
        )
        try:
            while True:
                woke = await asyncio.to_thread(self._wake.wait, IDLE_EXIT_SECONDS)
                if not woke:
                    with self._lock:  # idle: the thread ends (a later nudge starts another)
                        if self._wake.is_set():
                            continue
                        self._thread = None
                        return
                self._wake.clear()
                try:
                    await apply_inbox(engine, self.settings)
                    self.runs += 1
                except Exception as exc:  # the sensor applies it later; nothing is lost
                    self.failures += 1
                    log.warning("webhook apply after ack failed (the sensor will apply): %s", type(exc).__name__)
                    await asyncio.sleep(1)
        finally:
            await engine.dispose()
