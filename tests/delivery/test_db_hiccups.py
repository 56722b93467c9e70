"""A database hiccup is not a failed run: transient errors are retried inside the run, for a bounded time.

The errors are real ones, made by the real server: a role over its connection limit (`too many clients`),
backends terminated by an administrator (`admin shutdown`), a refused connection."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from integration_core.db.retry import DatabaseUnavailable, is_transient, retry_transient, retry_transient_sync
from integration_core.delivery.engine import BatchSummary, drain
from integration_core.delivery.runs import release_held, run_async, run_with_leases
from integration_core.settings import Settings
from tests.support.delivery import run
from tests.support.sandbox import SandboxHandle, sandbox_marker_counts
from tests.support.world import World, add_receiver, add_routings, statuses


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture()
def limited_role(db: Engine) -> Iterator[str]:
    """A role that may open no connection at all: every connect gets `too many connections` (53300)."""
    role = f"si_limited_{uuid.uuid4().hex[:8]}"
    with db.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'))
    yield role
    with db.begin() as conn:
        conn.execute(text(f'DROP ROLE "{role}"'))


def test_what_counts_as_transient(db: Engine, database_url: str, limited_role: str) -> None:
    # too many clients
    with pytest.raises(psycopg.OperationalError) as too_many:
        psycopg.connect(_libpq(make_url(database_url).set(username=limited_role).render_as_string(False)))
    # psycopg reports a refused connection without the server's SQLSTATE: the class says it all
    assert "too many connections" in str(too_many.value) and is_transient(too_many.value)
    # a refused connection (nothing listens): no SQLSTATE at all
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=2)
    assert is_transient(refused.value)
    # admin shutdown: an administrator (or a restart) ends the backend under an open connection
    engine = create_engine(database_url)
    try:
        with engine.connect() as victim:
            pid: int = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with db.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            with pytest.raises(Exception) as shutdown:
                victim.execute(text("SELECT 1"))
        assert is_transient(shutdown.value)
    finally:
        engine.dispose()
    # a constraint is not transient: raised at once, never retried
    with pytest.raises(Exception) as constraint, db.begin() as conn:
        conn.execute(text("INSERT INTO job_routings (job_id, receiving_company_id) VALUES (gen_random_uuid(), NULL)"))
    assert not is_transient(constraint.value)


def test_retries_are_bounded_and_say_why(database_url: str, limited_role: str) -> None:
    url = make_url(database_url).set(username=limited_role).render_as_string(False)
    engine = create_engine(url)
    calls: list[int] = []

    def connect() -> None:
        calls.append(1)
        with engine.connect():
            pass

    try:
        with pytest.raises(DatabaseUnavailable, match=r"database unavailable for a test after .* OperationalError"):
            retry_transient_sync(connect, seconds=0.5, what="a test")
    finally:
        engine.dispose()
    assert len(calls) >= 3  # tried again with backoff, then gave up within its budget

    async def not_transient() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(retry_transient(not_transient, seconds=5, what="a test"))


def test_backends_killed_during_a_batch_do_not_fail_the_run(
    db: Engine, database_url: str, engine_settings: Settings, sandbox: SandboxHandle, world: World
) -> None:
    """Every connection of the run is terminated again and again while it delivers: it retries, and delivers
    each routing exactly once."""
    company, tenant = add_receiver(db, sandbox, rate=20)
    sandbox.put_faults(tenant, seed=9, latency={"kind": "fixed", "ms": 50})
    add_routings(db, world, company, 60)
    stop = threading.Event()
    kills: list[int] = []

    def admin_kills() -> None:
        admin = create_engine(database_url)
        try:
            while not stop.wait(0.4):
                with admin.connect() as conn:
                    killed: int = conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                            "AND backend_type = 'client backend'"
                        )
                    ).scalar_one()
                kills.append(int(killed))
        finally:
            admin.dispose()

    killer = threading.Thread(target=admin_kills, daemon=True)

    async def body(engine: AsyncEngine, settings: Settings) -> BatchSummary:
        killer.start()
        try:
            return await drain(engine, settings, company, "run-hiccups", time_budget_seconds=60, rng=random.Random(2))
        finally:
            stop.set()

    # the production path of a run: its own small pool (RUN_DB_POOL_SIZE), its leases released at the end
    summary = run_with_leases(engine_settings, "run-hiccups", body)
    killer.join(10)
    assert sum(kills) >= 3, kills  # the run really lost connections, several times
    assert not summary.database_unavailable and summary.stopped is None
    db.dispose()  # the test's own pooled connections were terminated too
    with db.connect() as conn:
        claimed: int = conn.execute(text("SELECT count(*) FROM job_routings WHERE status = 'claimed'")).scalar_one()
    assert claimed == 0
    # a claim whose commit was lost with its connection was released at the end of the run: the next run
    # delivers the rest, and nothing is ever delivered twice
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET next_attempt_at = now() WHERE status <> 'synced'"))
    run(database_url, lambda e: drain(e, engine_settings, company, "run-after", time_budget_seconds=30))
    assert statuses(db) == {"synced": 60}
    assert set(sandbox_marker_counts(sandbox, tenant, "booking").values()) == {1}


def test_a_run_whose_database_stays_away_stops_cleanly_and_nothing_is_lost(
    db: Engine, database_url: str, engine_settings: Settings, sandbox: SandboxHandle, world: World
) -> None:
    """Longer than DB_RETRY_SECONDS without a database: the run stops (it does not crash), says why, and once
    the database is back what it held is given back and delivered, once."""
    company, tenant = add_receiver(db, sandbox, rate=5)  # 30 routings: six seconds of work
    add_routings(db, world, company, 30)
    admin_engine = create_engine(make_url(database_url).set(database="postgres"))
    name = make_url(database_url).database
    settings = engine_settings.model_copy(update={"db_retry_seconds": 1.0})

    def database_goes_away() -> None:
        deadline = time.monotonic() + 30
        while sandbox.inspect(tenant)["accepted_requests"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        with admin_engine.connect() as admin:
            admin.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            admin.commit()

    outage = threading.Thread(target=database_goes_away)

    async def body(engine: AsyncEngine, s: Settings) -> BatchSummary:
        outage.start()
        return await drain(engine, s, company, "run-outage", time_budget_seconds=60, rng=random.Random(4))

    try:
        summary = run_async(settings, body)
        outage.join(30)
    finally:
        with admin_engine.connect() as admin:
            admin.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
            admin.commit()
        admin_engine.dispose()
    assert summary.database_unavailable and "database unavailable" in (summary.stopped or "")

    db.dispose()
    released = release_held(settings, "run-outage", holder_stopped=True)  # as the run's end does
    assert released is not None
    with db.begin() as conn:
        conn.execute(text("UPDATE job_routings SET next_attempt_at = now() WHERE status <> 'synced'"))
    run(database_url, lambda e: drain(e, engine_settings, company, "run-after", time_budget_seconds=30))
    assert statuses(db) == {"synced": 30}
    assert set(sandbox_marker_counts(sandbox, tenant, "booking").values()) == {1}
