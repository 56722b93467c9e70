"""Exactly-once delivery of one receiving company's routings (no Dagster here; `pipelines/` schedules it).

For every routing of a batch: **check, send, mark**.

1. *Claim* due routings with a lease (`FOR UPDATE SKIP LOCKED`; lease owner = run id; `lease_version` bumped).
2. *Record* the attempt and commit before any request leaves; the same commit sets `lookup_required`, so a
   crash after the request left is never followed by a blind resend.
3. If an earlier request may have reached the provider (`lookup_required`), *look the marker up* first and
   adopt what is found.
4. *Send* (through the tenant's rate limiter), concurrently within the batch.
5. *Write back* with fencing (`WHERE lease_version = :v`): a run that lost its lease changes nothing.

Outcome → state: synced / adopted → `synced`; `RateLimited` → `pending` after Retry-After (no attempt burnt);
`Retryable` → `pending` with exponential backoff and full jitter (failed once attempts are exhausted);
`Permanent` → `failed` with the provider's message; `UnknownOutcome` (or any unexpected error) →
`needs_reconcile`; `AuthFailed` → connection unhealthy, routing back untouched, the batch stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from integration_core.db.retry import DatabaseUnavailable, retry_transient, transact
from integration_core.delivery.claims import Claimed, claim, held_status, unleased
from integration_core.delivery.connections import (
    LiveConnection,
    ProviderFactory,
    before_request,
    enabled_connection,
    open_connection,
)
from integration_core.delivery.decide import Action, RoutingState, next_action
from integration_core.delivery.leases import EXPIRE_LEASES
from integration_core.delivery.ratelimit import LeaseDeadline, request_deadline, request_priority
from integration_core.domain import AttemptOutcome, ConnectionHealth, RoutingStatus
from integration_core.providers.base import (
    AuthFailed,
    DeliveryResult,
    Permanent,
    ProviderError,
    RateLimited,
    Retryable,
    UnknownOutcome,
    redact,
)
from integration_core.settings import Settings

log = logging.getLogger(__name__)

AUTH_PAUSE_SECONDS = 60.0

T = TypeVar("T")

# the heartbeat renews a run's leases every this fraction of the lease; a routing's local deadline is this
# fraction of the lease after the renewal (claims.py sets the first one the same way)
HEARTBEAT_FRACTION = 1 / 6
DEADLINE_FRACTION = 0.9
# an idle run asks whether its slot is wanted (`drain(keep_waiting=...)`) at most this often
KEEP_WAITING_TTL_SECONDS = 2.0

# claim order over all batches of this process (the overlapping lanes of `drain`): earlier claimed, served first
_CLAIM_ORDER = itertools.count()


# --------------------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    routing_id: uuid.UUID
    error_code: str
    message: str


@dataclass
class BatchSummary:
    company_id: uuid.UUID
    run_id: str
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # routed → synced, seconds
    throttled: int = 0
    limiter_wait_seconds: float = 0.0
    requests: int = 0
    failures: list[Failure] = field(default_factory=list)
    stopped: str | None = None  # why the batch stopped early (auth failure, no connection, database gone)
    database_unavailable: bool = False  # stopped because the database stayed away longer than DB_RETRY_SECONDS
    elapsed_seconds: float = 0.0

    def merge(self, other: BatchSummary) -> None:
        self.claimed += other.claimed
        self.outcomes.update(other.outcomes)
        self.latencies.extend(other.latencies)
        self.throttled += other.throttled
        self.limiter_wait_seconds += other.limiter_wait_seconds
        self.requests += other.requests
        self.failures.extend(other.failures)
        self.stopped = other.stopped or self.stopped
        self.database_unavailable = self.database_unavailable or other.database_unavailable
        self.elapsed_seconds += other.elapsed_seconds

    def percentile(self, q: float) -> float | None:
        return percentile(self.latencies, q)

    @property
    def terminal_failures(self) -> int:
        return self.outcomes["failed"]


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --------------------------------------------------------------------------------------------------------------
# attempts and write-backs (all fenced)
# --------------------------------------------------------------------------------------------------------------

# A routing a run holds: `claimed` once the run has written to it; leased and not yet written (the claim writes only
# the lease, delivery/claims.py), it still reads `pending` or `needs_reconcile`. The fence is the lease version.
_HELD = held_status()

# The run's first write to a routing makes it `claimed` (and keeps a lookup the claim found due: `:lookup`).
_RECORD_ATTEMPT = text(
    f"""
    WITH fenced AS (
        UPDATE job_routings
           SET status = '{RoutingStatus.claimed}',
               attempts = attempts + :burn,
               lookup_required = lookup_required OR :sends OR :lookup
         WHERE id = :id AND lease_version = :v AND {_HELD}
        RETURNING id, attempts
    )
    INSERT INTO sync_attempts (routing_id, run_id, attempt_no, operation)
    SELECT id, :run, attempts + (1 - :burn), :op FROM fenced
    RETURNING id
    """
)

_FINISH_ATTEMPT = text(
    """
    UPDATE sync_attempts
       SET finished_at = clock_timestamp(), outcome = :outcome, http_status = :http_status,
           provider_trace_id = :trace_id, error_code = :code, error_message = :message,
           duration_ms = :duration_ms
     WHERE id = :id
    """
)

_RELEASE = f"""
    UPDATE job_routings
       SET lease_owner = NULL, lease_expires_at = NULL, {{sets}}
     WHERE id = :id AND lease_version = :v AND {_HELD}
    RETURNING extract(epoch FROM clock_timestamp() - created_at) AS age_s
"""


def _release(sets: str) -> Any:
    stmt = text(_RELEASE.format(sets=sets))
    return stmt.bindparams(bindparam("refs", type_=JSONB)) if ":refs" in sets else stmt


_SYNCED = _release(
    f"status = '{RoutingStatus.synced}', external_id = :external_id, external_refs = :refs, delivery_mode = :mode, "
    "synced_at = clock_timestamp(), lookup_required = false, last_error_code = NULL, last_error_message = NULL"
)
_TO_PENDING = _release(
    f"status = '{RoutingStatus.pending}', next_attempt_at = clock_timestamp() + make_interval(secs => :delay), "
    "lookup_required = :lookup, attempts = greatest(0, attempts - :refund), "
    "last_error_code = coalesce(:code, last_error_code), last_error_message = coalesce(:message, last_error_message)"
)
_TO_FAILED = _release(
    f"status = '{RoutingStatus.failed}', lookup_required = :lookup, "
    "last_error_code = :code, last_error_message = :message"
)
_TO_RECONCILE = _release(
    f"status = '{RoutingStatus.needs_reconcile}', lookup_required = true, "
    "next_attempt_at = clock_timestamp() + make_interval(secs => :delay), attempts = greatest(0, attempts - :refund), "
    "last_error_code = :code, last_error_message = :message"
)


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2^(attempts-1)))."""
    return rng.uniform(0, min(cap, base * 2 ** max(0, attempts - 1)))


class _Batch:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        live: LiveConnection,
        summary: BatchSummary,
        rng: random.Random,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.live = live
        self.summary = summary
        self.rng = rng
        self.stop = asyncio.Event()
        self.deadlines: dict[uuid.UUID, float] = {}  # extended by the heartbeat while the run is alive
        self.unfinished: set[uuid.UUID] = set()
        self.order: dict[uuid.UUID, float] = {}  # the routing's place in claim order: its requests' priority

    # -- database ------------------------------------------------------------------------------------------

    async def _tx(self, work: Callable[[AsyncConnection], Awaitable[T]], what: str) -> T:
        """One transaction, retried through transient database errors (DB_RETRY_SECONDS)."""
        return await transact(self.engine, work, seconds=self.settings.db_retry_seconds, what=what)

    async def _record(self, c: Claimed, op: str, *, sends: bool, burn: bool | None = None) -> int | None:
        """Record an attempt (fenced). `sends`: a request may leave, so a lookup is demanded from now on; `burn`:
        the attempt counts against DELIVERY_MAX_ATTEMPTS (by default when it sends)."""
        params = {
            "id": c.id,
            "v": c.lease_version,
            "run": self.summary.run_id,
            "op": op,
            "burn": 1 if (sends if burn is None else burn) else 0,
            "sends": sends,
            "lookup": c.lookup_required,
        }

        async def work(conn: AsyncConnection) -> int | None:
            row = (await conn.execute(_RECORD_ATTEMPT, params)).first()
            return None if row is None else int(row[0])

        return await self._tx(work, "recording an attempt")

    async def _finish(
        self,
        attempt_id: int,
        outcome: str,
        started: float,
        error: ProviderError | None = None,
        c: Claimed | None = None,
    ) -> None:
        params = {
            "id": attempt_id,
            "outcome": outcome,
            "http_status": getattr(error, "http_status", None),
            "trace_id": getattr(error, "trace_id", None),
            "code": error.code if error else None,
            "message": self._message(error, c) if error else None,
            "duration_ms": int((time.monotonic() - started) * 1000),
        }

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(_FINISH_ATTEMPT, params)

        await self._tx(work, "finishing an attempt")

    @staticmethod
    def _message(error: ProviderError, c: Claimed | None) -> str:
        msg = error.message
        if isinstance(error, Permanent) and error.field_errors:
            details = "; ".join(f"{k}: {', '.join(v)}" for k, v in error.field_errors.items())
            msg = f"{msg} ({details})"
        return redact(msg, c.sensitive if c else ())[:2000]

    async def _write(self, stmt: Any, c: Claimed, **params: Any) -> float | None:
        """A fenced write-back; returns the routing's age in seconds, or None when the lease was lost."""

        async def work(conn: AsyncConnection) -> Any:
            return (await conn.execute(stmt, {"id": c.id, "v": c.lease_version, **params})).first()

        row = await self._tx(work, "writing back an outcome")
        if row is None:
            self.summary.outcomes["lease_lost"] += 1
            return None
        return float(row[0])

    # -- outcomes ------------------------------------------------------------------------------------------

    async def _synced(self, c: Claimed, result: DeliveryResult, outcome: str) -> None:
        refs = {**result.refs, "kind": result.kind}
        age = await self._write(
            _SYNCED, c, external_id=result.external_id, refs=refs, mode=self.live.config.delivery_mode
        )
        if age is not None:
            self.summary.outcomes[outcome] += 1
            self.summary.latencies.append(age)

    async def _fail(self, c: Claimed, code: str, message: str, *, lookup: bool) -> None:
        if await self._write(_TO_FAILED, c, code=code, message=message, lookup=lookup) is not None:
            self.summary.outcomes["failed"] += 1
            self.summary.failures.append(Failure(c.id, code, message))

    async def _pending(
        self,
        c: Claimed,
        *,
        delay: float,
        lookup: bool,
        refund: int,
        code: str | None,
        message: str | None,
        outcome: str,
    ) -> None:
        written = await self._write(
            _TO_PENDING, c, delay=delay, lookup=lookup, refund=refund, code=code, message=message
        )
        if written is not None:
            self.summary.outcomes[outcome] += 1

    async def _reconcile_later(self, c: Claimed, error: ProviderError, *, refund: int = 0) -> None:
        written = await self._write(
            _TO_RECONCILE,
            c,
            delay=self.settings.reconcile_delay_seconds,
            refund=refund,
            code=error.code,
            message=self._message(error, c),
        )
        if written is not None:
            self.summary.outcomes["needs_reconcile"] += 1

    async def release(self, c: Claimed) -> None:
        """Give a claimed routing back untouched (the batch stopped before its turn)."""
        await self._pending(c, delay=0, lookup=c.lookup_required, refund=0, code=None, message=None, outcome="released")

    async def _handle_error(self, c: Claimed, attempts: int, error: ProviderError, *, sent: bool) -> None:
        """`sent`: the failing call was the delivery itself (not the lookup)."""
        message = self._message(error, c)
        lookup_after = c.lookup_required if not sent else False
        if isinstance(error, LeaseDeadline):  # not the routing's fault; look up first next time, to be safe
            await self._pending(
                c,
                delay=0,
                lookup=True if sent else c.lookup_required,
                refund=1 if sent else 0,
                code=None,
                message=None,
                outcome="released",
            )
        elif isinstance(error, RateLimited):
            self.summary.throttled += 1
            await self.live.limiter.throttled(error.retry_after)
            delay = error.retry_after + self.rng.uniform(0, 0.5)
            await self._pending(
                c,
                delay=delay,
                lookup=lookup_after,
                refund=1 if sent else 0,
                code=error.code,
                message=message,
                outcome="rate_limited",
            )
        elif isinstance(error, AuthFailed):
            self.stop.set()
            self.summary.stopped = f"auth_failed: {message}"
            await self._pending(
                c,
                delay=AUTH_PAUSE_SECONDS,
                lookup=lookup_after,
                refund=1 if sent else 0,
                code=error.code,
                message=message,
                outcome="auth_failed",
            )
        elif isinstance(error, Permanent):
            await self._fail(c, error.code, message, lookup=lookup_after)
        elif isinstance(error, Retryable):
            if attempts >= self.settings.delivery_max_attempts:
                await self._fail(
                    c,
                    "attempts_exhausted",
                    f"gave up after {attempts} attempts; last error: {message}",
                    lookup=lookup_after,
                )
                return
            delay = backoff_seconds(
                attempts,
                self.settings.delivery_backoff_base_seconds,
                self.settings.delivery_backoff_cap_seconds,
                self.rng,
            )
            await self._pending(
                c, delay=delay, lookup=lookup_after, refund=0, code=error.code, message=message, outcome="retry"
            )
        else:  # UnknownOutcome (and anything unclassified): the provider may have the record
            await self._reconcile_later(c, error)

    # -- one routing ---------------------------------------------------------------------------------------

    def _lease_too_short(self, c: Claimed) -> bool:
        """Never start a delivery whose next request could outlive the lease: once it expires, reconcile may hand
        the routing to another run, and two runs must never both send it (the rate limiter checks each further
        request the same way)."""
        return time.monotonic() + _slowest_request(self.settings) > self.deadlines.get(c.id, c.deadline)

    async def process(self, c: Claimed, *, lookup_only: bool = False) -> None:
        """Deliver one claimed routing (lookup first when required). `lookup_only` (reconcile): after a lookup
        that finds nothing, return the routing to `pending` instead of sending."""
        # the rate limiter refuses to hand out a slot this routing's lease would not cover
        token = request_deadline.set(lambda: self.deadlines.get(c.id, c.deadline))
        # and gives the next request slot to the routing claimed first (ratelimit.request_priority)
        order = request_priority.set(self.order.get(c.id, 0.0))
        try:
            await self._process(c, lookup_only=lookup_only)
        finally:
            request_priority.reset(order)
            request_deadline.reset(token)
            self.unfinished.discard(c.id)

    async def _process(self, c: Claimed, *, lookup_only: bool) -> None:
        if self.stop.is_set() or self._lease_too_short(c):
            await self.release(c)
            return
        provider = self.live.provider
        attempts = c.attempts
        state = RoutingState(
            status=RoutingStatus.claimed,
            lookup_required=c.lookup_required,
            attempts=attempts,
            max_attempts=self.settings.delivery_max_attempts,
            own_claim=True,
            lookup_only=lookup_only,
        )
        action = next_action(state)
        if action is Action.look_up:
            attempt_id = await self._record(c, "lookup", sends=False)
            if attempt_id is None:
                self.summary.outcomes["lease_lost"] += 1
                return
            started = time.monotonic()
            try:
                found = await provider.find_existing(c.request)
            except ProviderError as error:
                await self._finish(attempt_id, _attempt_outcome(error), started, error, c)
                await self._handle_error(c, attempts, error, sent=False)
                return
            except DatabaseUnavailable:
                raise  # the run stops; what it holds is released when it ends
            except Exception as exc:  # a bug must not strand the routing
                unexpected = _unexpected(exc, c)
                await self._finish(attempt_id, AttemptOutcome.unknown, started, unexpected, c)
                await self._reconcile_later(c, unexpected)
                return
            action = next_action(state.after_lookup(found is not None))
            if action is Action.adopt:
                assert found is not None
                await self._finish(attempt_id, AttemptOutcome.adopted, started)
                await self._synced(c, found, "adopted")
                return
            await self._finish(attempt_id, AttemptOutcome.not_found, started)
            if action is Action.requeue:
                await self._pending(c, delay=0, lookup=False, refund=0, code=None, message=None, outcome="not_found")
                return
            if action is Action.give_up:
                await self._fail(
                    c, "attempts_exhausted", f"not at the provider after {attempts} attempts", lookup=False
                )
                return
        assert action is Action.send, action
        if self.stop.is_set() or self._lease_too_short(c):
            await self.release(c)
            return

        # The attempt is recorded (and a lookup demanded) when the delivery's first *write* request has its
        # rate-limiter slot, right before it leaves — not while the routing queues for a slot, nor during the reads
        # before it (job mode looks the customer up first) — so an `in_flight` attempt means "a write may have
        # left", and a run that ends knows exactly which routings need a lookup.
        recorded: list[int] = []

        async def record_before_first_write() -> None:
            if recorded:
                return
            attempt_id = await self._record(c, "deliver", sends=True)
            if attempt_id is None:
                raise _LeaseLost
            recorded.append(attempt_id)

        started = time.monotonic()
        token = before_request.set(record_before_first_write)
        try:
            result = await provider.deliver(c.request)
        except _LeaseLost:
            self.summary.outcomes["lease_lost"] += 1
            return
        except ProviderError as error:
            if recorded:
                await self._finish(recorded[0], _attempt_outcome(error), started, error, c)
                await self._handle_error(c, attempts + 1, error, sent=True)
            elif isinstance(error, LeaseDeadline | RateLimited | AuthFailed):
                await self._handle_error(c, attempts, error, sent=False)  # nothing left, nothing counted
            else:  # failed before any request (the token endpoint): counted, nothing to look up
                await self._failed_before_sending(c, attempts, started, error)
            return
        except DatabaseUnavailable:
            raise  # the run stops; what it holds is released when it ends
        except Exception as exc:
            unexpected = _unexpected(exc, c)
            attempt_id = recorded[0] if recorded else await self._record(c, "deliver", sends=False, burn=True)
            if attempt_id is not None:
                await self._finish(attempt_id, AttemptOutcome.unknown, started, unexpected, c)
            await self._reconcile_later(c, unexpected)
            return
        finally:
            before_request.reset(token)
        # (a provider that delivers with reads alone would leave nothing recorded: record the attempt now)
        attempt_id = recorded[0] if recorded else await self._record(c, "deliver", sends=True)
        if attempt_id is not None:
            await self._finish(attempt_id, AttemptOutcome.synced, started)
        await self._synced(c, result, "synced")

    async def _failed_before_sending(self, c: Claimed, attempts: int, started: float, error: ProviderError) -> None:
        attempt_id = await self._record(c, "deliver", sends=False, burn=True)
        if attempt_id is None:
            self.summary.outcomes["lease_lost"] += 1
            return
        await self._finish(attempt_id, _attempt_outcome(error), started, error, c)
        await self._handle_error(c, attempts + 1, error, sent=False)


class _LeaseLost(Exception):
    """Raised from the request gate when the routing's lease moved on before its first write could leave."""


def _attempt_outcome(error: ProviderError) -> AttemptOutcome:
    if isinstance(error, RateLimited):
        return AttemptOutcome.rate_limited
    if isinstance(error, AuthFailed):
        return AttemptOutcome.auth_failed
    if isinstance(error, Permanent):
        return AttemptOutcome.failed
    if isinstance(error, Retryable):
        return AttemptOutcome.retryable
    return AttemptOutcome.unknown


def _unexpected(exc: BaseException, c: Claimed) -> UnknownOutcome:
    # the exception's text may quote homeowner data: log only its type and where it happened
    where = "".join(traceback.format_tb(exc.__traceback__, limit=-3))
    log.error("unexpected %s while delivering routing %s\n%s", type(exc).__name__, c.id, where)
    return UnknownOutcome(
        f"internal error ({type(exc).__name__}); the record will be looked up before any resend", code="internal_error"
    )


# --------------------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------------------

_CONNECTION_HEALTH = text(
    f"""
    UPDATE provider_connections
       SET health = CASE WHEN :auth_failed THEN '{ConnectionHealth.unhealthy}'
                         WHEN :ok THEN '{ConnectionHealth.healthy}' ELSE health END,
           last_success_at = CASE WHEN :ok THEN clock_timestamp() ELSE last_success_at END,
           last_failure_at = CASE WHEN :failed THEN clock_timestamp() ELSE last_failure_at END,
           last_error = CASE WHEN :failed THEN :error ELSE last_error END
     WHERE id = :id
    """
)


async def _note_connection_health(
    engine: AsyncEngine, settings: Settings, live: LiveConnection, summary: BatchSummary
) -> None:
    ok = summary.outcomes["synced"] + summary.outcomes["adopted"] > 0
    auth_failed = summary.outcomes["auth_failed"] > 0
    failed = auth_failed or summary.outcomes["failed"] > 0
    error = summary.stopped or (summary.failures[-1].message if summary.failures else None)
    if not (ok or failed):
        return
    params = {"id": live.row.id, "ok": ok and not auth_failed, "failed": failed, "auth_failed": auth_failed}

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(_CONNECTION_HEALTH, {**params, "error": error})

    await transact(engine, work, seconds=settings.db_retry_seconds, what="noting connection health")


_EXTEND_LEASES = text(
    f"""
    UPDATE job_routings SET lease_expires_at = now() + make_interval(secs => :lease)
     WHERE id = ANY(:ids) AND lease_owner = :owner AND {_HELD}
    RETURNING id
    """
)


async def _heartbeat(engine: AsyncEngine, batch: _Batch, owner: str, lease: float) -> None:
    """While the run is alive its leases do not expire: reconcile takes over only from a dead or stuck run.
    If the heartbeat cannot reach the database, deadlines are not extended and sending stops in time."""
    interval = max(0.5, lease * HEARTBEAT_FRACTION)
    while True:
        await asyncio.sleep(interval)
        ids = list(batch.unfinished)
        if not ids:
            continue
        started = time.monotonic()
        try:
            async with engine.begin() as conn:
                extended = (await conn.execute(_EXTEND_LEASES, {"ids": ids, "owner": owner, "lease": lease})).all()
        except Exception as exc:  # keep beating; the deadlines protect the provider meanwhile
            log.warning("lease heartbeat failed: %s", type(exc).__name__)
            continue
        for row in extended:
            batch.deadlines[row[0]] = started + lease * DEADLINE_FRACTION


async def _run_claimed(
    engine: AsyncEngine,
    settings: Settings,
    live: LiveConnection,
    claimed: list[Claimed],
    summary: BatchSummary,
    rng: random.Random,
    *,
    lease: float,
    lookup_only: bool = False,
) -> None:
    batch = _Batch(engine, settings, live, summary, rng)
    batch.deadlines = {c.id: c.deadline for c in claimed}
    batch.order = {c.id: float(next(_CLAIM_ORDER)) for c in claimed}  # claim order across this process's batches
    batch.unfinished = {c.id for c in claimed}
    sem = asyncio.Semaphore(settings.delivery_concurrency)

    async def one(c: Claimed) -> None:
        async with sem:
            await batch.process(c, lookup_only=lookup_only)

    heartbeat = asyncio.create_task(_heartbeat(engine, batch, summary.run_id, lease))
    waited, acquired = live.limiter.waited_seconds, live.limiter.acquired
    try:
        # a routing whose processing raises (the database gone for longer than DB_RETRY_SECONDS) stops the batch:
        # the others are cancelled, and what they hold is released when the run ends (delivery/leases.py)
        async with asyncio.TaskGroup() as group:
            for c in claimed:
                group.create_task(one(c))
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    summary.limiter_wait_seconds += live.limiter.waited_seconds - waited
    summary.requests += live.limiter.acquired - acquired


def lease_seconds(settings: Settings, live: LiveConnection, limit: int) -> float:
    """Short, because the heartbeat renews the leases of a live run every `HEARTBEAT_FRACTION` of the lease: a
    lease need not cover the batch (`limit` no longer matters), only the next request. A routing's deadline is
    `DEADLINE_FRACTION` of the lease after the last renewal, and no request starts that its slowest case would
    not finish by then (`_Batch._lease_too_short` before each delivery, the rate limiter before each request),
    so the lease covers that case over (DEADLINE_FRACTION - HEARTBEAT_FRACTION) — and DELIVERY_LEASE_SECONDS."""
    del live, limit
    margin = DEADLINE_FRACTION - HEARTBEAT_FRACTION
    return max(settings.delivery_lease_seconds, _slowest_request(settings) / margin + 1.0)


def _slowest_request(settings: Settings) -> float:
    """How long one provider request may take once it leaves, with a margin."""
    return settings.delivery_request_timeout_seconds * 1.5 + 1.0


async def _enabled_connection(engine: AsyncEngine, settings: Settings, company_id: uuid.UUID) -> Any:
    async def once() -> Any:
        async with AsyncSession(engine) as session:
            return await enabled_connection(session, company_id)

    return await retry_transient(once, seconds=settings.db_retry_seconds, what="reading the connection")


async def deliver_batch(
    engine: AsyncEngine,
    settings: Settings,
    company_id: uuid.UUID,
    run_id: str,
    *,
    limit: int | None = None,
    provider_factory: ProviderFactory | None = None,
    live: LiveConnection | None = None,
    rng: random.Random | None = None,
) -> BatchSummary:
    """Claim and deliver up to `limit` due routings of one receiving company. Safe to run concurrently."""
    started = time.monotonic()
    summary = BatchSummary(company_id=company_id, run_id=run_id)
    owned = live is None
    if live is None:
        row = await _enabled_connection(engine, settings, company_id)
        if row is None:
            summary.stopped = "no enabled provider connection"
            return summary
        live = open_connection(engine, row, settings, provider_factory)
    try:
        limit = limit or settings.delivery_batch_size
        lease = lease_seconds(settings, live, limit)
        claimed = await retry_transient(
            lambda: claim(engine, company_id, owner=run_id, limit=limit, lease_seconds=lease),
            seconds=settings.db_retry_seconds,
            what="claiming routings",
        )
        summary.claimed = len(claimed)
        if claimed:
            await _run_claimed(engine, settings, live, claimed, summary, rng or random.Random(), lease=lease)
            await _note_connection_health(engine, settings, live, summary)
    finally:
        if owned:
            await live.aclose()
    summary.elapsed_seconds = time.monotonic() - started
    return summary


_NEXT_DUE = text(
    f"""
    SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM job_routings
     WHERE receiving_company_id = :company
       AND status IN ('{RoutingStatus.pending}', '{RoutingStatus.needs_reconcile}')
       AND {unleased()}
    """
)


async def _due_within(engine: AsyncEngine, settings: Settings, company_id: uuid.UUID, seconds: float) -> bool:
    """Whether some routing of the company becomes due within `seconds`."""

    async def work(conn: AsyncConnection) -> bool:
        due_in = (await conn.execute(_NEXT_DUE, {"company": company_id})).scalar()
        return due_in is not None and float(due_in) <= seconds

    return await transact(engine, work, seconds=settings.db_retry_seconds, what="the next due routing")


async def drain(
    engine: AsyncEngine,
    settings: Settings,
    company_id: uuid.UUID,
    run_id: str,
    *,
    time_budget_seconds: float,
    limit: int | None = None,
    lanes: int = 2,
    idle_seconds: float = 0.0,
    poll_seconds: float = 1.0,
    keep_waiting: Callable[[], bool] | None = None,
    provider_factory: ProviderFactory | None = None,
    rng: random.Random | None = None,
) -> BatchSummary:
    """Deliver batch after batch while the company has due work and the time budget lasts (one provider client,
    one token, one rate limiter for the whole run). Two lanes overlap: while one batch's last requests are in
    flight the other has already claimed the next batch, so the tenant's budget is used without gaps.

    With `idle_seconds`, an idle run lingers that long (polling every `poll_seconds`) for new work before it
    ends, as long as `keep_waiting()` says nobody else needs its slot: new referrals of a busy company are then
    picked up within a second instead of paying for a new run."""
    total = BatchSummary(company_id=company_id, run_id=run_id)
    started = time.monotonic()
    deadline = started + time_budget_seconds
    try:
        row = await _enabled_connection(engine, settings, company_id)
    except DatabaseUnavailable as exc:
        total.stopped, total.database_unavailable = str(exc), True
        return total
    if row is None:
        total.stopped = "no enabled provider connection"
        return total
    live = open_connection(engine, row, settings, provider_factory)
    done = asyncio.Event()
    idle_since: list[float | None] = [None]
    asked: list[tuple[float, bool]] = []

    def slot_kept() -> bool:
        """`keep_waiting()`, asked at most every KEEP_WAITING_TTL_SECONDS by all lanes together (each answer
        costs the scheduler's database a query or two). When it cannot answer (burst_chaos: Dagster's storage
        during a PostgreSQL restart raised into the lane and failed the run), the run does not linger."""
        if keep_waiting is None:
            return True
        now = time.monotonic()
        if not asked or now - asked[-1][0] >= KEEP_WAITING_TTL_SECONDS:
            try:
                answer = keep_waiting()
            except Exception as exc:  # e.g. the scheduler's database restarting: not a reason to fail the run
                log.warning("whether another run needs this slot is unknown (%s): not lingering", type(exc).__name__)
                answer = False
            asked.append((now, answer))
        return asked[-1][1]

    async def lane() -> None:
        while not done.is_set() and time.monotonic() < deadline:
            summary = await deliver_batch(engine, settings, company_id, run_id, limit=limit, live=live, rng=rng)
            total.merge(summary)
            if summary.stopped:
                done.set()
            elif summary.claimed:
                idle_since[0] = None
            else:
                now = time.monotonic()
                since = idle_since[0] = idle_since[0] or now
                left = idle_seconds - (now - since)
                # yield the slot when another run wants it — unless this company's own work is due within the
                # idle window (a backoff, a lookup after a lost request): leaving would cost a new run and its
                # wait in the queue
                if left <= 0 or (not slot_kept() and not await _due_within(engine, settings, company_id, left)):
                    done.set()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), timeout=poll_seconds)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, lanes)):
                group.create_task(lane())
    except* DatabaseUnavailable as group_error:
        # the database stayed away longer than DB_RETRY_SECONDS: stop here; what the run still holds is released
        # when it ends (delivery/leases.py), or its leases expire if the database is still gone then
        first: BaseException = group_error
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        total.stopped, total.database_unavailable = str(first), True
        log.error("delivery run %s stopped: %s", run_id, total.stopped)
    finally:
        await live.aclose()
    total.elapsed_seconds = time.monotonic() - started  # wall time (the lanes overlap)
    return total


@dataclass
class ReconcileSummary:
    expired_leases: int = 0
    looked_up: BatchSummary | None = None
    companies: int = 0
    without_connection: int = 0

    @property
    def outcomes(self) -> Counter[str]:
        return self.looked_up.outcomes if self.looked_up else Counter()


_RECONCILE_COMPANIES = text(
    f"""
    SELECT receiving_company_id FROM job_routings
     WHERE status = '{RoutingStatus.needs_reconcile}' AND next_attempt_at <= now()
     GROUP BY receiving_company_id ORDER BY min(next_attempt_at)
    """
)


async def reconcile(
    engine: AsyncEngine,
    settings: Settings,
    run_id: str,
    *,
    limit_per_company: int = 500,
    provider_factory: ProviderFactory | None = None,
    rng: random.Random | None = None,
) -> ReconcileSummary:
    """Expired leases → `needs_reconcile`; then every due `needs_reconcile` routing is looked up at the provider
    by its marker: found → `synced` (its id adopted), absent → `pending`. Idempotent, and safe while batches run
    (it claims what it looks up, like a batch)."""
    result = ReconcileSummary(looked_up=BatchSummary(company_id=uuid.UUID(int=0), run_id=run_id))

    async def expire(conn: AsyncConnection) -> list[Any]:
        return list((await conn.execute(EXPIRE_LEASES)).all())

    expired = await transact(engine, expire, seconds=settings.db_retry_seconds, what="expiring leases")
    result.expired_leases = len(expired)
    if expired:
        log.warning("reconcile: %d expired lease(s) moved to needs_reconcile", len(expired))
    async with engine.connect() as conn:
        companies = [r[0] for r in (await conn.execute(_RECONCILE_COMPANIES)).all()]
    for company_id in companies:
        row = await _enabled_connection(engine, settings, company_id)
        if row is None:
            result.without_connection += 1
            continue
        result.companies += 1
        live = open_connection(engine, row, settings, provider_factory)
        try:
            lease = lease_seconds(settings, live, limit_per_company)
            claimed = await claim(
                engine,
                company_id,
                owner=run_id,
                limit=limit_per_company,
                lease_seconds=lease,
                statuses=(RoutingStatus.needs_reconcile,),
            )
            summary = BatchSummary(company_id=company_id, run_id=run_id, claimed=len(claimed))
            if claimed:
                await _run_claimed(
                    engine, settings, live, claimed, summary, rng or random.Random(), lookup_only=True, lease=lease
                )
            assert result.looked_up is not None
            result.looked_up.merge(summary)
        finally:
            await live.aclose()
    return result
