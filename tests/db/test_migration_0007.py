"""Migration 0007 (two job_routings indexes partial, so a claim writes fewer index entries) up and down on a
database holding routings in every delivery state: the indexes are rebuilt with the right predicates and contents
(and no half-built index is left), the queries that name an external id or a status still find their rows
through them, and the claim of those revisions works on either side."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text

from tests.support.db import alembic_config, raw_job, routing_indexes, scratch_database

INDEXES = ("ix_job_routings_external_id", "ix_job_routings_status_updated")


@pytest.fixture()
def scratch_url(pg_server: str) -> Iterator[str]:
    with scratch_database(pg_server, "si_mig7") as url:
        yield url


def _insert_world(engine: Engine) -> uuid.UUID:
    """One receiving company with a routing in each state (two due); returns the company."""
    with engine.begin() as c:
        company: uuid.UUID = c.execute(
            text("INSERT INTO companies (name) VALUES ('Receiver') RETURNING id")
        ).scalar_one()
        referrer: uuid.UUID = c.execute(
            text("INSERT INTO companies (name) VALUES ('Referrer') RETURNING id")
        ).scalar_one()
        tech: uuid.UUID = c.execute(
            text("INSERT INTO technicians (company_id, name) VALUES (:c, 'T') RETURNING id"), {"c": referrer}
        ).scalar_one()
        states: list[tuple[str, str | None, str | None]] = [
            ("synced", "ext-1", None),
            ("failed", None, None),
            ("pending", None, None),
            ("needs_reconcile", None, None),
            ("claimed", None, "old-run"),
            ("no_integration", None, None),
        ]
        for n, (status, external_id, owner) in enumerate(states):
            job = raw_job(c, referrer, tech, f"job {n}")
            c.execute(
                text(
                    "INSERT INTO job_routings (job_id, receiving_company_id, status, external_id, lease_owner, "
                    "lease_expires_at, next_attempt_at) VALUES (:j, :c, :st, :ext, :o, "
                    "CASE WHEN :leased THEN now() + interval '1 hour' END, now() - interval '1 minute')"
                ),
                {"j": job, "c": company, "st": status, "ext": external_id, "o": owner, "leased": owner is not None},
            )
    return company


def _through_index(engine: Engine, sql: str, index: str) -> list[Any]:
    """The rows of `sql`, read with sequential scans off; the plan must use `index`."""
    with engine.begin() as c:
        c.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in c.execute(text("EXPLAIN " + sql)).all())
        assert index in plan, plan
        return [r[0] for r in c.execute(text(sql)).all()]


def _check_queries(engine: Engine) -> None:
    assert _through_index(
        engine,
        "SELECT status FROM job_routings WHERE external_id = 'ext-1'",
        "ix_job_routings_external_id",
    ) == ["synced"]
    assert _through_index(
        engine, "SELECT status FROM job_routings WHERE status = 'failed'", "ix_job_routings_status_updated"
    ) == ["failed"]
    assert _through_index(
        engine,
        "SELECT status FROM job_routings WHERE status IN ('synced', 'failed') AND updated_at > now() - "
        "interval '1 day' ORDER BY status",
        "ix_job_routings_status_updated",
    ) == ["failed", "synced"]


# the claim of these revisions (0006-0009: it set `status = 'claimed'`), in raw SQL: the head's claim writes the lease
# only and a receipt into a table of migration 0010
_CLAIM_0009 = """
    UPDATE job_routings r
       SET status = 'claimed', lease_owner = :owner, lease_expires_at = now() + interval '60 seconds',
           lease_version = r.lease_version + 1
      FROM (SELECT id FROM job_routings
             WHERE receiving_company_id = :company AND status IN ('pending', 'needs_reconcile')
               AND next_attempt_at <= now()
             ORDER BY next_attempt_at, sequence LIMIT 10 FOR UPDATE SKIP LOCKED) due
     WHERE r.id = due.id
    RETURNING r.id
"""


def _claim(engine: Engine, company: uuid.UUID, owner: str) -> list[uuid.UUID]:
    with engine.begin() as c:
        return [r[0] for r in c.execute(text(_CLAIM_0009), {"company": company, "owner": owner})]


def test_0007_makes_two_indexes_partial_and_goes_down_again(scratch_url: str) -> None:
    cfg = alembic_config(scratch_url)
    command.upgrade(cfg, "0006")
    engine = create_engine(scratch_url)
    try:
        company = _insert_world(engine)
        before = routing_indexes(engine)
        assert all(" WHERE " not in before[name][0] for name in INDEXES)

        command.upgrade(cfg, "0007")
        after = routing_indexes(engine)
        assert set(after) == set(before)  # no index left behind under a temporary name
        assert all(valid for _, valid in after.values())
        assert after["ix_job_routings_external_id"][0].endswith("(external_id) WHERE (external_id IS NOT NULL)")
        assert after["ix_job_routings_status_updated"][0].endswith(
            "(status, updated_at) WHERE ((status)::text <> 'claimed'::text)"
        )
        _check_queries(engine)
        assert len(_claim(engine, company, "run-a")) == 2  # pending and needs_reconcile
        with engine.connect() as c:
            claimed: int = c.execute(text("SELECT count(*) FROM job_routings WHERE status = 'claimed'")).scalar_one()
        assert claimed == 3

        command.downgrade(cfg, "0006")
        assert routing_indexes(engine) == before
        _check_queries(engine)
        with engine.connect() as c:  # nothing lost either way
            rows = c.execute(text("SELECT status, count(*) FROM job_routings GROUP BY status")).all()
        assert dict(rows) == {"synced": 1, "failed": 1, "claimed": 3, "no_integration": 1}

        command.upgrade(cfg, "0007")
        assert routing_indexes(engine) == after
        with engine.begin() as c:  # the routings go back to pending: they can be claimed again
            c.execute(
                text(
                    "UPDATE job_routings SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL "
                    "WHERE lease_owner = 'run-a'"
                )
            )
        assert len(_claim(engine, company, "run-b")) == 2
    finally:
        engine.dispose()
