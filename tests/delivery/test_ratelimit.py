"""The shared rate budget, measured at the sandbox."""

from __future__ import annotations

import asyncio
import itertools

import httpx
from sqlalchemy import text

from integration_core.delivery.engine import deliver_batch
from integration_core.delivery.ratelimit import effective_burst
from tests.support.delivery import run
from tests.support.world import add_receiver, add_routings, statuses


def test_effective_burst_never_lets_a_second_exceed_the_budget() -> None:
    assert effective_burst(20, 20 * 0.92, 10) == 1
    assert effective_burst(60, 60 * 0.92, 10) == 4
    assert effective_burst(60, 60 * 0.92, 2) == 2
    assert effective_burst(5, 5, 10) == 1


def test_budget_of_20_per_second_never_exceeded_by_concurrent_processes(
    db, database_url, engine_settings, sandbox, world
) -> None:
    company, tenant = add_receiver(db, sandbox, rate=20, sandbox_rate=20)
    add_routings(db, world, company, 120)

    async def body(engine):
        # three independent batches (each with its own limiter object, as separate processes would have)
        return await asyncio.gather(
            *(deliver_batch(engine, engine_settings, company, f"p{i}", limit=40) for i in range(3))
        )

    run(database_url, body)
    info = sandbox.inspect(tenant)
    assert statuses(db) == {"synced": 120}
    assert info["rate_limited"] == 0
    assert info["max_requests_in_any_1s_window"] <= 20, info["max_requests_in_any_1s_window"]


def test_nobody_sends_before_retry_after_ends(db, database_url, engine_settings, sandbox, world) -> None:
    company, tenant = add_receiver(db, sandbox, rate=20, sandbox_rate=20)
    add_routings(db, world, company, 60)

    async def body(engine):
        async def storm() -> None:
            # once deliveries are flowing (not after a fixed delay: on a busy machine start-up may take longer)
            async with httpx.AsyncClient(base_url=sandbox.url) as c:
                for _ in range(300):
                    seen = (await c.get(f"/_sandbox/tenants/{tenant}/inspect")).json()
                    if seen["accepted_requests"] >= 10:
                        break
                    await asyncio.sleep(0.05)
                await c.post(f"/_sandbox/tenants/{tenant}/storm", json={"seconds": 1.0, "retry_after": 3})

        async def deliver_all() -> None:
            for _ in range(10):
                await asyncio.gather(
                    *(deliver_batch(engine, engine_settings, company, f"p{i}", limit=30) for i in range(2))
                )
                async with engine.connect() as conn:
                    left = (
                        await conn.execute(text("SELECT count(*) FROM job_routings WHERE status <> 'synced'"))
                    ).scalar_one()
                if not left:
                    return
                await asyncio.sleep(2.2)

        await asyncio.gather(storm(), deliver_all())

    run(database_url, body)
    info = sandbox.inspect(tenant, timestamps=True)
    assert info["rate_limited"] >= 1
    stamps = info["accepted_timestamps"]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # the storm lasted 1 s; only honouring Retry-After (3 s) explains a silence this long
    assert max(gaps) >= 2.9, max(gaps)
    assert statuses(db) == {"synced": 60}


def test_a_caller_whose_lease_cannot_cover_the_wait_takes_no_slot(db, database_url) -> None:
    """A reservation nobody uses would push everyone's schedule back: during a long Retry-After every routing
    would take a slot it gives up, and the schedule would run away from the clock."""
    import time

    import pytest

    from integration_core.delivery.ratelimit import LeaseDeadline, PostgresRateLimiter, request_deadline

    async def body(engine):
        limiter = PostgresRateLimiter(
            engine,
            provider="servicetitan",
            account_id="slot-leak",
            budget_per_second=5,
            burst=1,
            safety_margin=1.0,
            recovery_per_second=0.02,
            request_seconds=1.0,
        )
        await limiter.throttled(retry_after=30)  # everyone waits 30 s

        async def schedule() -> object:
            async with engine.connect() as conn:
                return (
                    await conn.execute(
                        text("SELECT next_slot_at FROM provider_rate_limits WHERE account_id = 'slot-leak'")
                    )
                ).scalar_one()

        before = await schedule()
        token = request_deadline.set(lambda: time.monotonic() + 5)  # this routing's lease covers 5 s
        try:
            for _ in range(20):
                with pytest.raises(LeaseDeadline):
                    await limiter.acquire()
        finally:
            request_deadline.reset(token)
        return before, await schedule()

    before, after = run(database_url, body)
    assert after == before  # nobody's schedule moved
