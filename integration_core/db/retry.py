"""A database hiccup is not a failed run: transient errors are retried with backoff, for a bounded time.

Transient: the server refused or dropped the connection (restart, `too many clients`, admin shutdown, crash
recovery), our own pool had no connection free in time, a serialization failure or a deadlock. Everything else
(a constraint, a bad statement) is raised at once. Every statement the delivery engine retries is safe to run
again: claims and write-backs are fenced by the lease version, and a write-back whose commit was lost with the
connection finds its routing already released and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs of errors that go away by themselves
TRANSIENT_SQLSTATES = frozenset(
    {
        "08000",  # connection_exception
        "08001",  # sqlclient_unable_to_establish_sqlconnection
        "08003",  # connection_does_not_exist
        "08004",  # sqlserver_rejected_establishment_of_sqlconnection
        "08006",  # connection_failure
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53300",  # too_many_connections ("sorry, too many clients already")
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, shutting down)
    }
)


class DatabaseUnavailable(RuntimeError):
    """Transient database errors went on for longer than the retry budget."""


def is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection free within DB_POOL_TIMEOUT_SECONDS
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if isinstance(error.orig, BaseException) else error
    if isinstance(error, psycopg.Error):
        sqlstate = getattr(error, "sqlstate", None)
        if sqlstate in TRANSIENT_SQLSTATES:
            return True
        # refused / reset / closed connections carry no SQLSTATE
        return sqlstate is None and isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(error, ConnectionError)


def describe(error: BaseException) -> str:
    """The error's class and SQLSTATE: never its text, which may quote statement parameters."""
    orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    sqlstate = getattr(orig, "sqlstate", None)
    return f"{type(orig).__name__}{f' ({sqlstate})' if sqlstate else ''}"


class _Backoff:
    """Exponential backoff with jitter within a time budget."""

    def __init__(self, seconds: float, what: str, first_delay: float, max_delay: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds, self.what = seconds, what
        self.delay, self.max_delay = first_delay, max_delay
        self.tries = 0

    def next_wait(self, error: Exception) -> float:
        """How long to wait before the next try; raises when `error` is not transient or the budget is spent."""
        if not is_transient(error):
            raise error
        self.tries += 1
        wait = random.uniform(self.delay / 2, self.delay)
        if time.monotonic() + wait > self.deadline:
            raise DatabaseUnavailable(
                f"database unavailable for {self.what} after {self.tries} tries over {self.seconds:g} s: "
                f"{describe(error)}"
            ) from error
        log.warning("database %s: %s; retrying in %.2f s", self.what, describe(error), wait)
        self.delay = min(self.max_delay, self.delay * 2)
        return wait


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    *,
    seconds: float,
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 2.0,
) -> T:
    """`await fn()`, again after transient database errors (exponential backoff with jitter) for up to
    `seconds`; then `DatabaseUnavailable`. Non-transient errors propagate at once."""
    backoff = _Backoff(seconds, what, first_delay, max_delay)
    while True:
        try:
            return await fn()
        except Exception as error:
            await asyncio.sleep(backoff.next_wait(error))


def retry_transient_sync(
    fn: Callable[[], T], *, seconds: float, what: str, first_delay: float = 0.1, max_delay: float = 2.0
) -> T:
    """`retry_transient` for synchronous callers (the sensor, the run launcher, the end of a run)."""
    backoff = _Backoff(seconds, what, first_delay, max_delay)
    while True:
        try:
            return fn()
        except Exception as error:
            time.sleep(backoff.next_wait(error))


async def transact(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], *, seconds: float, what: str
) -> T:
    """Run `work(conn)` in one transaction, the whole transaction again after a transient error."""

    async def once() -> T:
        async with engine.begin() as conn:
            return await work(conn)

    return await retry_transient(once, seconds=seconds, what=what)
