"""The per-(provider, account) request budget, shared by every process through PostgreSQL.

The key is provider-neutral: the connection's provider and its `account_id` (ServiceTitan's tenant id, Housecall
Pro's account), so two companies on one provider account share one budget and no two providers ever do.

A GCRA token bucket ("virtual scheduling"): the row keeps `next_slot_at`, the earliest time the next request
may go out at full rate. `acquire` reserves a slot with ONE atomic UPDATE (no lock held while anyone sleeps) and
returns how long the caller must wait; the caller sleeps outside any transaction. Any 1-second window therefore
sees at most `rate + burst - 1` requests from all processes together, where `rate` is the provider's budget times
the safety margin.

After a 429 every process waits out `backoff_until` (the provider's Retry-After), and the rate halves, then
recovers linearly (`RATE_LIMIT_RECOVERY_PER_SECOND` of the full rate per second).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from integration_core.db.retry import transact
from integration_core.providers.base import Retryable

# Set by the engine around each routing: the monotonic time by which its requests must be done (its lease).
request_deadline: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar(
    "request_deadline", default=None
)

# Set by the engine around each routing: its place in the order the run claimed its routings (lower first). When
# several requests of one process wait for a slot, the routing claimed first gets the next one: under a tight
# budget routings then finish one after another instead of all together at the end of the batch.
request_priority: contextvars.ContextVar[float] = contextvars.ContextVar("request_priority", default=0.0)


MAX_WAIT = 86_400.0  # no lease to respect: any wait


class LeaseDeadline(Retryable):
    """No request slot before the routing's lease would run out: nothing was sent for this request."""

    default_code = "lease_deadline"


# the rate in force: the full rate, or the reduced rate after a 429 recovering linearly
_EFFECTIVE_RATE = (
    "least(rate, current_rate + rate * :recovery * "
    "greatest(0, extract(epoch FROM clock_timestamp() - coalesce(last_throttled_at, clock_timestamp()))))"
)
_START = "greatest(clock_timestamp(), coalesce(backoff_until, clock_timestamp()))"

_ENSURE = text(
    """
    INSERT INTO provider_rate_limits (provider, account_id, rate, burst, current_rate)
    VALUES (:provider, :account, :rate, :burst, :rate)
    ON CONFLICT (provider, account_id) DO UPDATE
       SET rate = excluded.rate, burst = excluded.burst,
           current_rate = least(provider_rate_limits.current_rate, excluded.rate)
    """
)

_NEXT_SLOT = f"greatest(next_slot_at, {_START}) + make_interval(secs => 1.0 / {_EFFECTIVE_RATE})"
_WAIT_FOR = "extract(epoch FROM greatest({start}, {slot} - make_interval(secs => burst / {rate})) - clock_timestamp())"

# Reserve the next slot — only when its wait is within :max_wait (the caller's lease): a reservation nobody uses
# would push everyone's schedule back (a slot leak), so a caller that could not use it takes none.
_ACQUIRE = text(
    f"""
    UPDATE provider_rate_limits
       SET next_slot_at = {_NEXT_SLOT},
           requests_total = requests_total + 1
     WHERE provider = :provider AND account_id = :account
       AND {_WAIT_FOR.format(start=_START, slot=_NEXT_SLOT, rate=_EFFECTIVE_RATE)} <= :max_wait
    RETURNING {_WAIT_FOR.format(start=_START, slot="next_slot_at", rate=_EFFECTIVE_RATE)} AS wait_s
    """
)

_BACKOFF_LEFT = text(
    """
    SELECT greatest(0, extract(epoch FROM backoff_until - clock_timestamp()))
      FROM provider_rate_limits WHERE provider = :provider AND account_id = :account
    """
)

_THROTTLED = text(
    f"""
    UPDATE provider_rate_limits
       SET backoff_until = greatest(coalesce(backoff_until, now()), now() + make_interval(secs => :retry_after)),
           next_slot_at = greatest(next_slot_at, now() + make_interval(secs => :retry_after)),
           current_rate = greatest(rate * 0.1, {_EFFECTIVE_RATE} * 0.5),
           last_throttled_at = now(),
           throttled_total = throttled_total + 1
     WHERE provider = :provider AND account_id = :account
    """
)


class _Turns:
    """One turn at a time; the next goes to the waiter with the lowest priority value, then to the earliest.

    `asyncio.Lock` hands turns out in arrival order: with a tight budget and many routings in flight, every
    routing's first request (a customer lookup) goes out before anyone's second, and all of them finish near the
    end of the batch. Handing the turn to the routing claimed first instead costs no throughput (a turn is
    handed over as soon as it is given back) and finishes routings one after another."""

    def __init__(self) -> None:
        self._busy = False
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, priority: float) -> AsyncIterator[None]:
        if self._busy or self._waiters:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._arrivals), waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed the turn, then cancelled: pass it on
                    self._hand_on()
                raise  # (a cancelled waiter left in the heap is skipped by _hand_on)
        else:
            self._busy = True
        try:
            yield
        finally:
            self._hand_on()

    def _hand_on(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)  # the turn passes straight to it: still busy
                return
        self._busy = False


def effective_burst(budget: float, rate: float, burst: int) -> int:
    """The burst we allow ourselves: a 1-second window holds at most `burst + floor(rate)` requests, which must
    stay within the provider's budget."""
    return max(1, min(burst, math.floor(budget - rate + 1e-9)))


class PostgresRateLimiter:
    """A `RequestGate` for one (provider, account): call `acquire()` before every provider API request."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        provider: str,
        account_id: str,
        budget_per_second: float,
        burst: int,
        safety_margin: float,
        recovery_per_second: float,
        request_seconds: float = 30.0,
        db_retry_seconds: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.account_id = account_id
        self.rate = budget_per_second * safety_margin
        self.burst = effective_burst(budget_per_second, self.rate, burst)
        self.recovery = recovery_per_second
        self.request_seconds = request_seconds  # how long one request may take once sent
        self.db_retry_seconds = db_retry_seconds  # transient database errors are retried this long
        self._sleep = sleep
        self._ensured = False
        self._turns = _Turns()
        self.acquired = 0
        self.waited_seconds = 0.0
        self.throttled_count = 0

    @property
    def _key(self) -> dict[str, object]:
        return {"provider": self.provider, "account": self.account_id}

    async def ensure(self) -> None:
        if self._ensured:
            return

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(_ENSURE, {**self._key, "rate": self.rate, "burst": self.burst})

        await transact(self.engine, work, seconds=self.db_retry_seconds, what="rate limit row")
        self._ensured = True

    async def acquire(self, *, write: bool = True) -> None:
        await self.ensure()
        started = time.monotonic()
        # One reservation at a time per process: slots are handed out just ahead of use (a short horizon, so a
        # 429 seen anywhere stops everyone promptly) and released at their time, not in bunches; the routing
        # claimed first goes first (`request_priority`).
        async with self._turns.turn(request_priority.get()):
            await self._acquire_slot()
        self.acquired += 1
        self.waited_seconds += time.monotonic() - started

    async def _acquire_slot(self) -> None:
        async def reserve(conn: AsyncConnection) -> float | None:
            deadline = request_deadline.get()
            # the longest wait the routing's lease allows, with the request itself still inside it
            max_wait = MAX_WAIT if deadline is None else deadline() - time.monotonic() - self.request_seconds
            if max_wait < 0:
                return None
            params = {**self._key, "recovery": self.recovery, "max_wait": max_wait}
            wait = (await conn.execute(_ACQUIRE, params)).scalar_one_or_none()
            return None if wait is None else float(wait)

        async def backoff_left(conn: AsyncConnection) -> float:
            return float((await conn.execute(_BACKOFF_LEFT, self._key)).scalar_one() or 0)

        while True:
            wait = await transact(self.engine, reserve, seconds=self.db_retry_seconds, what="a request slot")
            if wait is None:  # no slot reserved: the schedule stays as it was for everyone else
                raise LeaseDeadline("waiting for a request slot would outlive the routing's lease")
            if wait <= 0:
                break
            await self._sleep(wait)
            # a 429 seen by anyone while we slept moves everyone's schedule: check before sending
            left = await transact(self.engine, backoff_left, seconds=self.db_retry_seconds, what="the backoff")
            if left <= 0:
                break

    async def throttled(self, retry_after: float) -> None:
        """Record a 429: every process waits `retry_after` seconds, and the rate is lowered for a while."""
        await self.ensure()
        self.throttled_count += 1
        params = {**self._key, "recovery": self.recovery, "retry_after": max(0.0, retry_after)}

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(_THROTTLED, params)

        await transact(self.engine, work, seconds=self.db_retry_seconds, what="recording a 429")
