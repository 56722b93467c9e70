"""Migration 0010 (a claim writes the lease only, so that its update is HOT) up and down on a database holding
routings in every state, two of them claimed the old way by a run still going; and, at head, that a claim's update
really is HOT and leaves `updated_at` alone while every other column's change still sets it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from integration_core.delivery.claims import _claim_statement, claim
from integration_core.delivery.leases import release_run
from integration_core.domain import DUE_ROUTING_STATUSES, RoutingStatus
from tests.support.db import alembic_config, raw_job, routing_indexes, scratch_database

LEASE_COLUMNS = {"lease_owner", "lease_expires_at", "lease_version"}


@pytest.fixture()
def scratch_url(pg_server: str) -> Iterator[str]:
    with scratch_database(pg_server, "si_mig10") as url:
        yield url


def _world(engine: Engine, states: tuple[str, ...]) -> tuple[uuid.UUID, dict[uuid.UUID, str]]:
    """One receiving company with a routing in each of `states` (due a minute ago; `claimed` ones leased by
    'old-run' for an hour); returns the company and routing id -> state."""
    routings: dict[uuid.UUID, str] = {}
    with engine.begin() as c:
        company: uuid.UUID = c.execute(
            text("INSERT INTO companies (name) VALUES ('Receiver') RETURNING id")
        ).scalar_one()
        tech: uuid.UUID = c.execute(
            text("INSERT INTO technicians (company_id, name) VALUES (:c, 'T') RETURNING id"), {"c": company}
        ).scalar_one()
        for n, status in enumerate(states):
            job = raw_job(c, company, tech, f"job {n}")
            rid: uuid.UUID = c.execute(
                text(
                    "INSERT INTO job_routings (job_id, receiving_company_id, status, external_id, lease_owner, "
                    "lease_expires_at, next_attempt_at) VALUES (:j, :c, CAST(:st AS text), "
                    "CASE WHEN CAST(:st AS text) = 'synced' THEN 'ext-' || :n END, "
                    "CASE WHEN CAST(:st AS text) = 'claimed' THEN 'old-run' END, "
                    "CASE WHEN CAST(:st AS text) = 'claimed' THEN now() + interval '1 hour' END, "
                    "now() - interval '1 minute') "
                    "RETURNING id"
                ),
                {"j": job, "c": company, "st": status, "n": str(n)},
            ).scalar_one()
            routings[rid] = status
    return company, routings


def _rows(engine: Engine) -> dict[uuid.UUID, tuple[str, str | None, bool]]:
    with engine.connect() as c:
        rows = c.execute(text("SELECT id, status, lease_owner, lookup_required FROM job_routings")).all()
    return {r[0]: (str(r[1]), r[2], bool(r[3])) for r in rows}


def _fillfactor(engine: Engine) -> list[str] | None:
    with engine.connect() as c:
        options: list[str] | None = c.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'job_routings'")
        ).scalar_one()
    return options


def _tables(engine: Engine) -> set[str]:
    with engine.connect() as c:
        return {str(r[0]) for r in c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))}


def _claim(url: str, company: uuid.UUID, owner: str) -> set[uuid.UUID]:
    async def run() -> set[uuid.UUID]:
        engine = create_async_engine(url)
        try:
            return {c.id for c in await claim(engine, company, owner=owner, limit=10, lease_seconds=60)}
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _lease_only_update_sets_updated_at(engine: Engine, rid: uuid.UUID) -> bool:
    with engine.begin() as c:
        before: object = c.execute(text("SELECT updated_at FROM job_routings WHERE id = :i"), {"i": rid}).scalar_one()
        c.execute(text("SELECT pg_sleep(0.01)"))
    with engine.begin() as c:
        after: object = c.execute(
            text("UPDATE job_routings SET lease_version = lease_version + 1 WHERE id = :i RETURNING updated_at"),
            {"i": rid},
        ).scalar_one()
    return bool(after != before)


def test_0010_up_and_down_keeps_what_runs_hold(scratch_url: str) -> None:
    cfg = alembic_config(scratch_url)
    command.upgrade(cfg, "0009")
    engine = create_engine(scratch_url)
    try:
        company, states = _world(engine, ("pending", "pending", "needs_reconcile", "claimed", "claimed", "synced"))
        old_claimed = {rid for rid, s in states.items() if s == "claimed"}
        before: dict[str, tuple[str, bool]] = routing_indexes(engine)
        assert "ix_job_routings_lease" in before and "ix_job_routings_claimed" not in before

        command.upgrade(cfg, "0010")
        after: dict[str, tuple[str, bool]] = routing_indexes(engine)
        assert set(after) == set(before) - {"ix_job_routings_lease"} | {"ix_job_routings_claimed"}
        assert after["ix_job_routings_claimed"][0].endswith(
            "(receiving_company_id) WHERE ((status)::text = 'claimed'::text)"
        )
        assert _fillfactor(engine) == ["fillfactor=85"]
        with engine.connect() as c:  # the run still going got a receipt for what it holds
            receipts: dict[str, list[uuid.UUID]] = dict(
                c.execute(text("SELECT owner, routing_ids FROM routing_claims")).all()
            )
        assert [(owner, set(ids)) for owner, ids in receipts.items()] == [("old-run", old_claimed)]
        assert not _lease_only_update_sets_updated_at(engine, next(iter(states)))

        # that run ends: what it claimed the old way is given back as before
        with engine.begin() as c:
            released = release_run(
                c, "old-run", holder_stopped=True, request_timeout_seconds=10, reconcile_delay_seconds=5
            )
            assert c.execute(text("SELECT count(*) FROM routing_claims")).scalar_one() == 0
        assert (released.to_pending, released.to_reconcile) == (2, 0)

        # the head's claim leases the four due routings and leaves their status
        leased = _claim(scratch_url, company, "new-run")
        assert leased == {rid for rid, s in states.items() if s != "synced"}
        rows = _rows(engine)
        assert {rid: rows[rid][:2] for rid in leased} == {
            rid: ("needs_reconcile" if states[rid] == "needs_reconcile" else "pending", "new-run") for rid in leased
        }

        command.downgrade(cfg, "0009")
        assert routing_indexes(engine) == before
        assert _fillfactor(engine) is None
        assert "routing_claims" not in _tables(engine)
        assert _lease_only_update_sets_updated_at(engine, next(iter(states)))
        # leased routings are claimed again, as 0009's claim left them; a lookup due is kept
        rows = _rows(engine)
        assert {rid: rows[rid] for rid in leased} == {
            rid: ("claimed", "new-run", states[rid] == "needs_reconcile") for rid in leased
        }

        command.upgrade(cfg, "0010")
        assert routing_indexes(engine) == after
        with engine.connect() as c:
            receipts = dict(c.execute(text("SELECT owner, routing_ids FROM routing_claims")).all())
        assert [(owner, set(ids)) for owner, ids in receipts.items()] == [("new-run", leased)]
    finally:
        engine.dispose()


def test_the_claim_is_a_hot_update_that_leaves_updated_at(scratch_url: str) -> None:
    command.upgrade(alembic_config(scratch_url), "head")
    engine = create_engine(scratch_url)
    try:
        company, states = _world(engine, ("pending",) * 5 + ("needs_reconcile",))
        with engine.connect() as c:
            stamped: dict[uuid.UUID, object] = dict(c.execute(text("SELECT id, updated_at FROM job_routings")).all())
        statement = _claim_statement(frozenset(RoutingStatus(s) for s in DUE_ROUTING_STATUSES))
        with engine.begin() as c:
            c.execute(text("SELECT pg_sleep(0.01)"))
            got = c.execute(statement, {"company": company, "limit": 10, "owner": "run-1", "lease": 60}).all()
            updated, hot = c.execute(
                text(
                    "SELECT pg_stat_get_xact_tuples_updated('job_routings'::regclass), "
                    "pg_stat_get_xact_tuples_hot_updated('job_routings'::regclass)"
                )
            ).one()
        assert len(got) == 6
        # every row version written on its own page with no index entry: no index names a column the claim writes
        assert updated == hot == 6
        with engine.connect() as c:
            assert dict(c.execute(text("SELECT id, updated_at FROM job_routings")).all()) == stamped
        rid = next(iter(states))
        with engine.begin() as c:  # a change of anything else does set it
            c.execute(text("UPDATE job_routings SET status = 'claimed' WHERE id = :i"), {"i": rid})
            assert (
                c.execute(text("SELECT updated_at FROM job_routings WHERE id = :i"), {"i": rid}).scalar_one()
                > (stamped[rid])
            )
    finally:
        engine.dispose()


def test_every_column_but_the_lease_sets_updated_at(scratch_url: str) -> None:
    """The trigger names its columns (so that a lease-only update is HOT): a column added to job_routings must be
    added to it too (a migration), or changing only that column would leave `updated_at` stale."""
    command.upgrade(alembic_config(scratch_url), "head")
    engine = create_engine(scratch_url)
    try:
        with engine.connect() as c:
            columns = {
                str(r[0])
                for r in c.execute(
                    text(
                        "SELECT attname FROM pg_attribute WHERE attrelid = 'job_routings'::regclass AND attnum > 0 "
                        "AND NOT attisdropped"
                    )
                )
            }
            fires_on = {
                str(r[0])
                for r in c.execute(
                    text(
                        "SELECT a.attname FROM pg_trigger t "
                        "JOIN pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = ANY(t.tgattr) "
                        "WHERE t.tgname = 'trg_job_routings_updated_at'"
                    )
                )
            }
        assert fires_on == columns - LEASE_COLUMNS - {"updated_at"}
    finally:
        engine.dispose()
