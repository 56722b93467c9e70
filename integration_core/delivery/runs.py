"""One delivery (or reconcile) run as a process sees it: a small engine of its own, and its leases given back
however it ends.

`run_with_leases` runs the engine's coroutine on a fresh event loop with a run-sized pool (RUN_DB_POOL_SIZE
connections, no overflow). When the coroutine returns, raises, or is interrupted (a cancel from the Dagster UI
and SIGTERM reach a run worker as an exception in its main thread), the event loop is closed first — every
request of the run is then over — and `release_run` hands back what the run still holds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from integration_core.db.engine import oneshot_engine, resolve_database_url, run_engine
from integration_core.db.retry import DatabaseUnavailable, retry_transient_sync
from integration_core.delivery.leases import Released, release_run
from integration_core.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_async(settings: Settings, fn: Callable[[AsyncEngine, Settings], Awaitable[T]]) -> T:
    """`fn(engine, settings)` on a fresh event loop with a run-sized async engine, disposed afterwards.

    SIGINT / SIGTERM (how a cancel from the Dagster UI or a stop reaches a run worker) cancel the coroutine
    cleanly while the loop runs — an exception raised by a signal handler in the middle of the event loop can be
    swallowed by a transport callback — and are handed on to the previous handler once the loop has ended."""
    received: list[int] = []
    try:
        return asyncio.run(_main(settings, fn, received))
    except asyncio.CancelledError:
        if not received:
            raise
        _hand_on(received[0])
        raise


async def _main(settings: Settings, fn: Callable[[AsyncEngine, Settings], Awaitable[T]], received: list[int]) -> T:
    engine = run_engine(settings)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler in (signal.SIG_IGN, None):
                continue
            previous[int(sig)] = handler

            def on_signal(signum: int = int(sig)) -> None:
                received.append(signum)
                if task is not None:
                    task.cancel()

            loop.add_signal_handler(sig, on_signal)
    try:
        return await fn(engine, settings)
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
        await engine.dispose()


def _hand_on(signum: int) -> None:
    """Deliver an interrupt the event loop took to the handler in place before it (Dagster's raises
    DagsterExecutionInterruptedError, Python's SIGINT handler KeyboardInterrupt)."""
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)  # usually raises; one that only takes note leaves the run to end cancelled
        return
    raise SystemExit(128 + signum)  # the default action of SIGTERM: end the process (the leases are released)


def run_with_leases(settings: Settings, owner: str, fn: Callable[[AsyncEngine, Settings], Awaitable[T]]) -> T:
    """`run_async`, then — whatever happened — release the routings `owner` (the run id) still holds."""
    try:
        return run_async(settings, fn)
    finally:
        release_held(settings, owner, holder_stopped=True)


def release_held(settings: Settings, owner: str, *, holder_stopped: bool) -> Released | None:
    """Release what `owner` holds (delivery/leases.py), through transient database errors for DB_RETRY_SECONDS.
    None when the database stayed away: the leases then expire and reconcile takes the routings over."""
    engine = oneshot_engine(resolve_database_url(settings))

    def once() -> Released:
        with engine.begin() as conn:
            return release_run(
                conn,
                owner,
                holder_stopped=holder_stopped,
                request_timeout_seconds=settings.delivery_request_timeout_seconds,
                reconcile_delay_seconds=settings.reconcile_delay_seconds,
            )

    try:
        released = retry_transient_sync(once, seconds=settings.db_retry_seconds, what="releasing a run's routings")
    except DatabaseUnavailable as exc:
        log.error("could not release the routings of run %s (their leases will expire): %s", owner, exc)
        return None
    if released.total:
        log.warning(
            "run %s ended holding %d routing(s): %d back to pending, %d to needs_reconcile (a request may have left)",
            owner,
            released.total,
            released.to_pending,
            released.to_reconcile,
        )
    return released
