"""The exactly-once invariant tests' machinery (ServiceTitan and Housecall Pro): batches racing each other with
reconcile in between until no routing is open, and the attempt history / state that explain a failure."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from integration_core.delivery.engine import deliver_batch, reconcile


def fault_mix(seed: int, i: int) -> dict[str, Any]:
    """The faults of the ``i``-th account/tenant (``put_faults`` keywords): 10 % errors, 5 % commit-then-fail
    (status or dropped connection, alternating), 5 % timeouts that outlast the client's 1.0 s, 1-30 ms latency;
    the first one (``i`` = 0) also fails its reads (lookups, customer searches)."""
    return {
        "seed": seed * 100 + i,
        "applies_to": "writes" if i else "all",
        "error_rate": 0.10,
        "commit_then_fail_rate": 0.05,
        "commit_then_fail_mode": "drop" if i % 2 else "status",
        "timeout_rate": 0.05,
        "timeout_s": 1.3,  # the client gives up after 1.0 s
        "latency": {"kind": "uniform", "min_ms": 1, "max_ms": 30},
    }


async def _open_is_zero(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        open_: int = (
            await conn.execute(
                text("SELECT count(*) FROM job_routings WHERE status IN ('pending', 'claimed', 'needs_reconcile')")
            )
        ).scalar_one()
    return bool(open_ == 0)


async def race_until_quiet(
    engine: AsyncEngine,
    engine_settings: Any,
    companies: Iterable[uuid.UUID],
    *,
    control_url: str,
    chaos: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]],
    deadline_s: float,
    tolerate_db_errors: bool = False,
) -> None:
    """Two racing batch workers per company, a reconciler every 0.3 s and ``chaos`` (given a client of the
    sandbox's control API), until no routing is pending, claimed or needs reconcile (or ``deadline_s`` passed).

    ``tolerate_db_errors``: a quiet check that meets a database error (a shared server at its connection limit)
    counts as not quiet yet instead of failing the test.
    """

    async def worker(company: uuid.UUID, name: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            s = await deliver_batch(engine, engine_settings, company, name, limit=25, rng=random.Random(name))
            if s.claimed == 0:
                await asyncio.sleep(0.05)

    async def reconciler(stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await reconcile(engine, engine_settings, f"reconcile-{n}")
            await asyncio.sleep(0.3)

    async def quiet() -> bool:
        if not tolerate_db_errors:
            return await _open_is_zero(engine)
        try:
            return await _open_is_zero(engine)
        except DBAPIError:  # the shared server is at its connection limit: the engine retries; so do we
            return False

    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=control_url) as control:
        tasks = [asyncio.create_task(chaos(control)), asyncio.create_task(reconciler(stop))]
        for company in companies:
            tasks += [asyncio.create_task(worker(company, f"run-{company}-{k}", stop)) for k in range(2)]
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if await quiet():
                break
        stop.set()
        await asyncio.gather(*tasks)


def count_by_status(rows: Iterable[Any]) -> dict[str, int]:
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    return by_status


def routing_history(db: Engine, routing_ids: list[str]) -> str:
    """The attempt history of routings, to explain a failure."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT routing_id, id, run_id, operation, outcome, error_code, started_at, finished_at "
                "FROM sync_attempts WHERE routing_id = ANY(CAST(:ids AS uuid[])) ORDER BY routing_id, id"
            ),
            {"ids": routing_ids},
        ).all()
    return "\n".join(str(tuple(r)) for r in rows)


def routing_state(db: Engine, routing_ids: list[str]) -> str:
    """Where routings stand, to explain a failure."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, status, attempts, next_attempt_at, now(), lookup_required, last_error_code, "
                "last_error_message FROM job_routings WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": routing_ids},
        ).all()
    return "\n".join(str(tuple(r)) for r in rows)
